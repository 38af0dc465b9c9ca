"""Kafka edge: the one place every Kafka client of the project is built (consumer, producer, admin).

Each client gets the user's client properties (`CDC_KAFKA_CONFIG` file, `--kafka-config key=value`) on
top of the caller's own settings, so SASL/TLS reach every connection. librdkafka itself is the judge of
property names: an unknown one makes the constructor fail, and that failure becomes a `KafkaConfigError`
naming the key. Connection failures (wrong password, untrusted certificate, plaintext against a TLS
listener) arrive through librdkafka's error callback; `probe()` turns them into one `KafkaUnavailable`
line that names the cause instead of hanging.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from cdc_consumer.config import KafkaSettings
from cdc_consumer.secrets import redact

log = logging.getLogger(__name__)


class KafkaConfigError(ValueError):
    """The client properties are not acceptable (unknown key, bad value, unreadable file)."""


class KafkaUnavailable(RuntimeError):
    """Kafka cannot be used: unreachable, authentication failed, TLS failed. The message names the cause."""


def parse_pairs(pairs: tuple[str, ...] | list[str]) -> dict[str, str]:
    """`key=value` strings of `--kafka-config` into a dict."""
    parsed: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise KafkaConfigError(f"--kafka-config {key.strip() or pair!r}: expected key=value")
        parsed[key.strip()] = value.strip()
    return parsed


_PLAINTEXT_REFUSED = re.compile(r"SSL listener|Disconnected.*state APIVERSION_QUERY")


class ErrorWatch(logging.Handler):
    """librdkafka's error callback and log sink: keeps the telling connection failure (authentication,
    TLS, a listener speaking another protocol) so a failure can name its cause, and keeps librdkafka's
    retry chatter off the terminal."""

    _CAUSES = {
        KafkaError._AUTHENTICATION: "authentication failed",
        KafkaError._SSL: "TLS failed",
    }

    def __init__(self, settings: KafkaSettings) -> None:
        super().__init__(logging.DEBUG)
        self._settings = settings
        self._lock = threading.Lock()
        self.error: KafkaError | None = None
        self.log_line: str | None = None
        self.logger = logging.Logger("cdc_consumer.kafka_clients.librdkafka")  # private: not in the tree
        self.logger.addHandler(self)
        self.logger.propagate = False

    def __call__(self, error: KafkaError) -> None:
        with self._lock:
            if self.error is None or error.code() in self._CAUSES or self.error.code() not in self._CAUSES:
                self.error = error

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("FAIL") or (record.levelno >= logging.WARNING and not message.startswith("CONFWARN")):
            self.log_line = message

    def serve(self, client: Any) -> None:
        """Let librdkafka deliver pending callbacks (they are served by poll())."""
        try:
            client.poll(0.2)
        except (RuntimeError, KafkaException):
            pass

    @property
    def decisive(self) -> bool:
        """An error retrying will not cure: authentication or TLS failed."""
        error, line = self.error, self.log_line or ""
        # A listener that hangs up on the first (plaintext) request is a TLS listener, not a broker restarting.
        return (error is not None and error.code() in self._CAUSES) or bool(_PLAINTEXT_REFUSED.search(line))

    def cause(self) -> str | None:
        error, line = self.error, self.log_line
        kind = self._CAUSES.get(error.code()) if error is not None else None
        text = error.str() if kind and error is not None else (line or (error.str() if error is not None else None))
        if text is None:
            return None
        text = redact(re.sub(r"^\S+ \[[^]]*\] \[[^]]*\]: ", "", text), self._settings.secrets)
        if kind is None and re.search(r"SSL|certificate|handshake", text, re.IGNORECASE):
            kind = "TLS failed"
        if kind is None and (_PLAINTEXT_REFUSED.search(text) or "security.protocol" in text):
            kind = ("the broker closed the connection at the first request "
                    "(does the listener need TLS/SASL: security.protocol?)")
        return f"{kind}: {text}" if kind else text


def client_config(settings: KafkaSettings, own: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The caller's settings with the user's properties on top (these win: they carry security)."""
    return {"bootstrap.servers": settings.bootstrap, **(own or {}), **settings.properties}


def _build(factory: Callable[[dict], Any], settings: KafkaSettings, own: Mapping[str, Any] | None,
           watch: ErrorWatch | None) -> Any:
    config = client_config(settings, own)
    if watch is not None:
        config["error_cb"] = watch
        config.setdefault("logger", watch.logger)
    try:
        return factory(config)
    except KafkaException as exc:
        raise KafkaConfigError(_config_message(exc, settings)) from None
    except (TypeError, ValueError) as exc:
        raise KafkaConfigError(f"Kafka client configuration{_where(settings)}: "
                               f"{redact(str(exc), settings.secrets)}") from None


# A consumed record's headers as librdkafka hands them back: (name, bytes or None) pairs in wire order.
ConsumedHeaders = list[tuple[str, bytes | None]]


def consumed(message: Message) -> tuple[str, int, int, ConsumedHeaders | None]:
    """Topic, partition, offset and headers of a consumed record. The stubs type them for every Message
    (an error event has no position; a message being produced may hold a dict or str values)."""
    topic, partition, offset = message.topic(), message.partition(), message.offset()
    if topic is None or partition is None or offset is None:
        raise ValueError(f"not a consumed record: {message.error()}")
    return topic, partition, offset, cast("ConsumedHeaders | None", message.headers())


def consumer(settings: KafkaSettings, own: Mapping[str, Any] | None = None, *,
             watch: ErrorWatch | None = None) -> Consumer:
    return _build(Consumer, settings, own, watch)


def producer(settings: KafkaSettings, own: Mapping[str, Any] | None = None, *,
             watch: ErrorWatch | None = None) -> Producer:
    return _build(Producer, settings, own, watch)


def admin(settings: KafkaSettings, own: Mapping[str, Any] | None = None, *,
          watch: ErrorWatch | None = None) -> AdminClient:
    return _build(AdminClient, settings, own, watch)


def replication_for(brokers: int) -> tuple[int, dict[str, str]]:
    """Replication factor min(3, brokers) and, when it is 3, `min.insync.replicas=2`: an `acks=all` write
    then survives one broker down and is never acknowledged by a single replica."""
    factor = min(3, max(1, brokers))
    return factor, ({"min.insync.replicas": "2"} if factor == 3 else {})


def ensure_topics(client: AdminClient, names: Sequence[str], *, partitions: int, replication: int,
                  configs: Mapping[str, str] | None = None, timeout: float = 30.0) -> dict[str, str]:
    """Create the missing topics (`replication_for(brokers)` gives a cluster's factor and configs); by name,
    "created" or "exists" (an existing topic is left as it is: changing its partitions would move keys
    between partitions). Other failures (authorization, replication factor, timeout) raise KafkaException."""
    if not names:
        return {}
    futures = client.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=replication,
                                             config=dict(configs or {})) for name in names],
                                   request_timeout=timeout, operation_timeout=timeout)
    outcome = {}
    for name, future in futures.items():
        try:
            future.result(timeout=timeout + 5)
            outcome[name] = "created"
        except KafkaException as exc:
            error: Any = exc.args[0] if exc.args else None
            if getattr(error, "code", lambda: None)() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
            outcome[name] = "exists"
    return outcome


def validate(settings: KafkaSettings) -> None:
    """Let librdkafka judge the properties without connecting anywhere (no bootstrap servers)."""
    config = {**settings.properties, "logger": _SILENT}
    try:
        Producer(config).flush(0)
    except KafkaException as exc:
        raise KafkaConfigError(_config_message(exc, settings)) from None


def probe(settings: KafkaSettings, timeout: float = 10.0, *, topic: str | None = None):
    """Cluster metadata within `timeout`, or `KafkaUnavailable` naming the cause (auth, TLS, unreachable)."""
    watch = ErrorWatch(settings)
    return metadata(admin(settings, {"socket.timeout.ms": int(timeout * 1000)}, watch=watch), settings, watch,
                    timeout=timeout, topic=topic)


def metadata(client: Any, settings: KafkaSettings, watch: ErrorWatch, *, timeout: float = 10.0,
             topic: str | None = None):
    """`client.list_topics()`, asked in short rounds so an authentication or TLS failure ends the wait at
    once (librdkafka itself would retry until the timeout); `KafkaUnavailable` names the cause."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return client.list_topics(topic, timeout=max(0.1, min(1.0, deadline - time.monotonic())))
        except KafkaException as exc:
            watch.serve(client)
            if watch.decisive or time.monotonic() >= deadline:
                raise KafkaUnavailable(describe_failure(settings, watch, exc)) from None


def describe_failure(settings: KafkaSettings, watch: ErrorWatch | None, exc: BaseException | None = None) -> str:
    cause = watch.cause() if watch is not None else None
    if cause is None and exc is not None:
        error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
        cause = redact(error.str() if error else str(exc), settings.secrets)
    return f"Kafka at {settings.bootstrap}: {cause or 'no answer'}"


def _where(settings: KafkaSettings) -> str:
    return f" ({settings.source})" if settings.source else ""


def _config_message(exc: KafkaException, settings: KafkaSettings) -> str:
    error = exc.args[0] if exc.args else None
    text = error.str() if isinstance(error, KafkaError) else str(exc)
    unknown = re.search(r'No such configuration property: "([^"]+)"', text)
    if unknown:
        return f"Kafka client configuration{_where(settings)}: unknown property {unknown.group(1)!r} " \
               f"(librdkafka property names, e.g. sasl.mechanisms, ssl.ca.location)"
    culprit = next((k for k in settings.properties if k in text), None) or _culprit(settings)
    named = f"property {culprit!r}: " if culprit and culprit not in text else ""
    return f"Kafka client configuration{_where(settings)}: {named}{redact(text, settings.secrets)}"


def _culprit(settings: KafkaSettings) -> str | None:
    """The property without which librdkafka accepts the rest, when its message names none (e.g.
    sasl.jaas.config, ssl.truststore.location)."""
    for key in settings.properties:
        try:
            Producer({**{k: v for k, v in settings.properties.items() if k != key}, "logger": _SILENT}).flush(0)
        except KafkaException:
            continue
        return key
    return None


_SILENT = logging.getLogger("cdc_consumer.kafka_clients.silent")
_SILENT.disabled = True
