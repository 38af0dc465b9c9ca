"""Dead-letter queue: records that cannot be decoded or mapped, republished unchanged with error headers.

The original key, value and headers are kept byte for byte; these headers are added:
`cdc.error` (the message), `cdc.error.type` (the error's name, e.g. InvalidJson, UnmappableRecord),
`cdc.error.edge` (decoder, registry, mapping, cassandra), `cdc.error.class` (the library exception's
class, e.g. InvalidRequest), `cdc.error.reason` (a short tag, e.g. invalid_value),
`cdc.original.topic`, `cdc.original.partition`, `cdc.original.offset`, and `cdc.dlq.attempt` (1 when
first parked; `cdc dlq replay` re-parks a record that still fails with attempt + 1). Messages are
redacted (`errors.redact`): no credential reaches a header. A replayed record's older error headers are
replaced, not repeated.

A record's token is released only once the broker acknowledged its DLQ copy (acks=all, idempotent
producer), so the consumer never commits past a bad record it has not parked. Delivery failures are
classified by `classify_kafka_error`: a transient one (broker away, timeout) is produced again after a
backoff, at most `max_attempts` times (each attempt bounded by `message.timeout.ms`); a fatal one
(authorization, unknown topic, a message too large) or running out of attempts makes `raise_if_failed`
raise FatalError("DLQ topic ... not writable"): the consumer exits non-zero instead of retrying forever.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException

from cdc_consumer import kafka_clients
from cdc_consumer.config import KafkaSettings
from cdc_consumer.errors import CdcError, FatalError, TransientError, backoff_delay, redact

log = logging.getLogger(__name__)

DEFAULT_TOPIC_TEMPLATE = "{topic}.dlq"
ERROR_HEADERS = ("cdc.error", "cdc.error.type", "cdc.error.edge", "cdc.error.class", "cdc.error.reason",
                 "cdc.original.topic", "cdc.original.partition", "cdc.original.offset", "cdc.dlq.attempt")
ATTEMPT_HEADER = "cdc.dlq.attempt"

# Delivery errors that no retry can fix: the DLQ topic is not writable for this process.
_FATAL_CODES = frozenset(getattr(KafkaError, name) for name in (
    "TOPIC_AUTHORIZATION_FAILED", "CLUSTER_AUTHORIZATION_FAILED", "SASL_AUTHENTICATION_FAILED", "_AUTHENTICATION",
    "UNKNOWN_TOPIC_OR_PART", "_UNKNOWN_TOPIC", "MSG_SIZE_TOO_LARGE", "_MSG_SIZE_TOO_LARGE", "INVALID_RECORD",
    "RECORD_LIST_TOO_LARGE", "POLICY_VIOLATION", "TOPIC_EXCEPTION", "INVALID_REQUIRED_ACKS", "TOPIC_DELETION_DISABLED",
) if hasattr(KafkaError, name))


def classify_kafka_error(error: KafkaError, topic: str = "") -> CdcError:
    """Kafka edge: a delivery (or consumer) error -> TransientError (retry) or FatalError (stop)."""
    message = redact(f"{error.name()}: {error.str()}")
    if error.fatal() or error.code() in _FATAL_CODES:
        return FatalError(f"DLQ topic {topic} not writable: {message}" if topic else message, edge="kafka",
                          reason="kafka_fatal", error_class=error.name())
    return TransientError(message, edge="kafka", reason="kafka_unavailable", error_class=error.name())


def error_headers(*, topic: str, partition: int, offset: int, error_type: str, reason: str, edge: str,
                  error_class: str, reason_tag: str, attempt: int) -> list[tuple[str, bytes]]:
    return [
        ("cdc.error", redact(reason).encode("utf-8", "replace")),
        ("cdc.error.type", error_type.encode()),
        ("cdc.error.edge", edge.encode()),
        ("cdc.error.class", error_class.encode()),
        ("cdc.error.reason", reason_tag.encode()),
        ("cdc.original.topic", topic.encode()),
        ("cdc.original.partition", str(partition).encode()),
        ("cdc.original.offset", str(offset).encode()),
        (ATTEMPT_HEADER, str(attempt).encode()),
    ]


def dlq_topic(template: str, topic: str) -> str:
    """The DLQ topic of `topic` from a template using `{topic}` (e.g. `{topic}.dlq`, `dlq.{topic}`)."""
    if "{topic}" not in template:
        raise ValueError(f"DLQ topic template {template!r} must contain {{topic}}")
    return template.replace("{topic}", topic)


@dataclass(eq=False)
class _Parked:
    token: Hashable
    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    attempts: int = 0
    retry_at: float = 0.0


class DeadLetterQueue:
    def __init__(self, bootstrap: str, *, topic_template: str = DEFAULT_TOPIC_TEMPLATE,
                 create_topics: bool = True, retry_max: float = 5.0, max_attempts: int = 3,
                 delivery_timeout: float = 30.0, extra_config: dict | None = None,
                 kafka: KafkaSettings | None = None) -> None:
        dlq_topic(topic_template, "x")  # validate the template up front
        self.topic_template = topic_template
        self.create_topics = create_topics
        self.retry_max = retry_max
        self.max_attempts = max_attempts
        self.fatal: FatalError | None = None
        kafka = kafka or KafkaSettings(bootstrap)  # the user's client properties (security) on every client
        config = {"acks": "all", "enable.idempotence": True, "linger.ms": 5,
                  "message.timeout.ms": int(delivery_timeout * 1000), **(extra_config or {})}
        self._producer = kafka_clients.producer(kafka, config)
        self._admin = kafka_clients.admin(kafka) if create_topics else None
        self._known_topics: set[str] = set()
        self._delivered: list[Hashable] = []
        self._retry: list[_Parked] = []
        self.pending = 0
        self.sent = 0

    def send(self, token: Hashable, *, topic: str, partition: int, offset: int, key: bytes | None,
             value: bytes | None, headers: list[tuple[str, bytes]] | None, error_type: str, reason: str,
             edge: str = "decoder", error_class: str | None = None, reason_tag: str = "", attempt: int = 1,
             target: str | None = None) -> str:
        """Park one record; its token comes back from poll() once the DLQ copy is acknowledged.
        `target` overrides the templated DLQ topic (a replay re-parks into the DLQ it read from)."""
        target = target or dlq_topic(self.topic_template, topic)
        self._ensure_topic(target)
        kept = [(k, v) for k, v in headers or () if k not in ERROR_HEADERS]
        added = error_headers(topic=topic, partition=partition, offset=offset, error_type=error_type, reason=reason,
                              edge=edge, error_class=error_class or error_type, reason_tag=reason_tag or error_type,
                              attempt=attempt)
        parked = _Parked(token, target, key, value, [*kept, *added])
        self.pending += 1
        self._produce(parked)
        return target

    def raise_if_failed(self) -> None:
        """FatalError once a DLQ copy could not be delivered for good (the consumer exits non-zero)."""
        if self.fatal is not None:
            raise self.fatal

    def poll(self, timeout: float = 0.0) -> list[Hashable]:
        """Serve delivery reports and due retries; return tokens whose DLQ copy is acknowledged."""
        self._producer.poll(timeout)
        now = time.monotonic()
        for parked in [p for p in self._retry if p.retry_at <= now]:
            self._retry.remove(parked)
            self._produce(parked)
        delivered, self._delivered = self._delivered, []
        return delivered

    def flush(self, timeout: float) -> bool:
        """Wait until every parked record is acknowledged (True) or the deadline passes."""
        deadline = time.monotonic() + timeout
        while self.pending and self.fatal is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._producer.flush(min(remaining, 0.1))
            self.poll(0)
        return not self.pending

    def close(self, timeout: float = 10.0) -> bool:
        return self.flush(timeout)

    def _produce(self, parked: _Parked) -> None:
        parked.attempts += 1
        while True:
            try:
                self._producer.produce(parked.topic, value=parked.value, key=parked.key, headers=parked.headers,
                                       on_delivery=lambda err, msg, p=parked: self._on_delivery(err, p))
                return
            except BufferError:  # local queue full: serve deliveries, then try again
                self._producer.poll(0.1)
            except KafkaException as exc:  # refused before sending (e.g. unknown topic): a delivery failure
                self._on_delivery(exc.args[0], parked)
                return

    def _on_delivery(self, error: KafkaError | None, parked: _Parked) -> None:
        if error is None:
            self.pending -= 1
            self.sent += 1
            self._delivered.append(parked.token)
            return
        classified = classify_kafka_error(error, parked.topic)
        if isinstance(classified, TransientError) and parked.attempts >= self.max_attempts:
            classified = FatalError(f"DLQ topic {parked.topic} not writable: {parked.attempts} delivery attempts "
                                    f"failed, the last with {classified.message}", edge="kafka",
                                    reason="dlq_unwritable", error_class=classified.error_class)
        if isinstance(classified, FatalError):
            log.error("%s", classified.message)
            self.fatal = self.fatal or classified
            return  # never acknowledged: the consumer stops without committing past this record
        delay = backoff_delay(parked.attempts, 0.2, self.retry_max)
        log.warning("DLQ delivery to %s failed (attempt %d of %d, retry in %.1fs): %s", parked.topic,
                    parked.attempts, self.max_attempts, delay, classified.message)
        parked.retry_at = time.monotonic() + delay
        self._retry.append(parked)

    def _ensure_topic(self, topic: str) -> None:
        """Create the DLQ topic once if missing (brokers may not auto-create topics)."""
        if self._admin is None or topic in self._known_topics:
            return
        try:
            # Replicated like the topics it shadows: min(3, brokers), min.insync.replicas 2 at 3 (acks=all).
            brokers = len(self._admin.list_topics(timeout=10).brokers)
            if kafka_clients.ensure_topics(self._admin, [topic], partitions=1, brokers=brokers,
                                           timeout=10)[topic] == "created":
                log.info("created DLQ topic %s (replication factor %d)", topic,
                         kafka_clients.replication_for(brokers)[0])
        except KafkaException as exc:
            log.warning("could not create DLQ topic %s (producing anyway): %s", topic, exc)
        self._known_topics.add(topic)


# --- reading and replaying a DLQ (`cdc dlq list|replay`) ------------------------------------------------

def header_map(headers: list[tuple[str, bytes]] | None) -> dict[str, str]:
    """The last value of each header, decoded (error headers are ASCII or UTF-8 text)."""
    return {k: (v or b"").decode("utf-8", "replace") for k, v in headers or ()}


def parked_reason(headers: dict[str, str]) -> str:
    """What a parked record is counted under: its error type (UnmappableRecord, InvalidJson, ...)."""
    return headers.get("cdc.error.type", "?")


def matches_reason(headers: dict[str, str], reason: str | None) -> bool:
    """`--reason` matches the error type (e.g. UnmappableRecord) or the reason tag (e.g. invalid_value)."""
    return reason is None or reason in (headers.get("cdc.error.type"), headers.get("cdc.error.reason"))


def replay_group(dlq_topic_name: str, reason: str | None) -> str:
    """The replay's own consumer group: one per DLQ topic and reason filter, so a filtered replay never
    marks records of another reason as replayed, and an interrupted replay resumes where it stopped."""
    return f"cdc-dlq-replay.{dlq_topic_name}" + (f".{reason}" if reason else "")


class ReparkingQueue(DeadLetterQueue):
    """The DLQ a replay parks records that still fail into: the DLQ topic it reads, keeping the record's
    original topic/partition/offset and incrementing `cdc.dlq.attempt`."""

    def __init__(self, bootstrap: str, dlq_topic_name: str, **kwargs: Any) -> None:
        super().__init__(bootstrap, create_topics=False, **kwargs)
        self.dlq_topic_name = dlq_topic_name

    def send(self, token: Hashable, *, topic: str, partition: int, offset: int, key: bytes | None,
             value: bytes | None, headers: list[tuple[str, bytes]] | None, **error: Any) -> str:
        parked = header_map(headers)
        attempt = int(parked.get(ATTEMPT_HEADER, "1") or 1) + 1
        return super().send(token, topic=parked.get("cdc.original.topic", topic),
                            partition=int(parked.get("cdc.original.partition", partition)),
                            offset=int(parked.get("cdc.original.offset", offset)), key=key, value=value,
                            headers=headers, **{**error, "attempt": attempt, "target": self.dlq_topic_name})
