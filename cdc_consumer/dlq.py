"""Dead-letter queue: records that cannot be decoded or mapped, republished unchanged with error headers.

The original key, value and headers are kept byte for byte; these headers are added:
`cdc.error` (the message), `cdc.error.type` (the error's name, e.g. InvalidJson, UnmappableRecord),
`cdc.error.edge` (decoder, registry, mapping, cassandra), `cdc.error.class` (the library exception's
class, e.g. InvalidRequest), `cdc.error.reason` (a short tag, e.g. invalid_value),
`cdc.original.topic`, `cdc.original.partition`, `cdc.original.offset`, and `cdc.dlq.attempt` (1 when
first parked; `cdc dlq replay` re-parks a record that still fails with attempt + 1). Messages are
redacted (`secrets.mask_text`): no credential reaches a header. A replayed record's older error headers are
replaced, not repeated.

The queue is a `sink_protocol.Sink` whose writes are `DeadLetter`s (a record that cannot be applied, and
its error): `add(token, letters)` produces each record's DLQ copy, and the token comes back from `poll()`
only once the broker acknowledged it (acks=all, idempotent producer), so the consumer never commits past
a bad record it has not parked. Delivery failures are
classified by `classify_kafka_error`: a transient one (broker away, timeout) is produced again after a
backoff, at most `max_attempts` times (each attempt bounded by `message.timeout.ms`); a fatal one
(authorization, unknown topic, a message too large) or running out of attempts makes `flush`
raise FatalError("DLQ topic ... not writable"): the consumer exits non-zero instead of retrying forever.
The DLQ never backpressures (a full local queue is served in place) and never rejects a record.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic

from confluent_kafka import KafkaError, KafkaException, Message

from cdc_consumer import kafka_clients
from cdc_consumer.config import KafkaSettings
from cdc_consumer.errors import ClassifiedError, FatalError, PermanentRecordError, TransientError, backoff_delay
from cdc_consumer.events import RecordContext
from cdc_consumer.secrets import mask_text
from cdc_consumer.sink_protocol import Token

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


def classify_kafka_error(error: KafkaError, topic: str = "") -> ClassifiedError:
    """Kafka edge: a delivery (or consumer) error -> TransientError (retry) or FatalError (stop)."""
    message = mask_text(f"{error.name()}: {error.str()}")
    if error.fatal() or error.code() in _FATAL_CODES:
        return FatalError(f"DLQ topic {topic} not writable: {message}" if topic else message, edge="kafka",
                          reason="kafka_fatal", error_class=error.name())
    return TransientError(message, edge="kafka", reason="kafka_unavailable", error_class=error.name())


def error_headers(*, topic: str, partition: int | None, offset: int | None, error_type: str, reason: str, edge: str,
                  error_class: str, reason_tag: str, attempt: int) -> list[tuple[str, bytes]]:
    return [
        ("cdc.error", mask_text(reason).encode("utf-8", "replace")),
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


@dataclass(frozen=True)
class DeadLetter:
    """A record that cannot be applied, and why: what the DLQ parks (its DLQ copy is the original key,
    value and headers, with the error headers added)."""

    record: RecordContext  # where it came from: topic, partition, offset, key and headers
    value: bytes | None
    error: ClassifiedError
    error_type: str | None = None  # cdc.error.type; default: the underlying error's class
    attempt: int = 1  # cdc.dlq.attempt (a replay re-parks a record that still fails with attempt + 1)


@dataclass(eq=False)
class _Owner:
    """A token, and how many of its DLQ copies still await acknowledgement."""

    token: Any
    outstanding: int


@dataclass(eq=False)
class _Parked:
    owner: _Owner
    topic: str
    key: bytes | str | None
    value: bytes | None
    headers: list[tuple[str, str | bytes | None]]  # as Producer.produce takes them
    attempts: int = 0
    retry_at: float = 0.0


class DeadLetterQueue(Generic[Token]):
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
        self._delivered: list[Token] = []
        self._retry: list[_Parked] = []
        self.pending = 0
        self.sent = 0

    # ------------------------------------------------------------------ the Sink protocol (sink_protocol.py)

    def add(self, token: Token, writes: Iterable[DeadLetter]) -> None:
        """Park a record (its DLQ copies); its token comes back from poll() once all are acknowledged."""
        letters = list(writes)
        if not letters:
            self._delivered.append(token)
            return
        owner = _Owner(token, len(letters))
        for letter in letters:
            parked = self._copy(owner, letter)
            self._ensure_topic(parked.topic)
            origin = letter.record
            log.warning("%s[%d]@%d -> %s: %s", origin.topic, origin.partition, origin.offset, parked.topic,
                        letter.error.describe())
            self.pending += 1
            self._produce(parked)

    @property
    def buffered(self) -> int:
        return 0  # add() hands every copy to the producer at once

    @property
    def in_flight(self) -> int:
        return self.pending

    def flush(self) -> None:
        """FatalError once a DLQ copy could not be delivered for good (the consumer exits non-zero); the
        producer sends on its own, so nothing else is sent here."""
        if self.fatal is not None:
            raise self.fatal

    def rejected(self) -> list[tuple[Token, PermanentRecordError]]:
        return []  # a DLQ copy is delivered, retried, or fatal: never refused for one record

    def poll(self, timeout: float = 0.0) -> list[Token]:
        """Serve delivery reports and due retries; return tokens whose DLQ copy is acknowledged."""
        self._producer.poll(timeout)
        now = time.monotonic()
        for parked in [p for p in self._retry if p.retry_at <= now]:
            self._retry.remove(parked)
            self._produce(parked)
        delivered, self._delivered = self._delivered, []
        return delivered

    def drain(self, timeout: float) -> bool:
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
        return self.drain(timeout)

    def _copy(self, owner: _Owner, letter: DeadLetter, target: str | None = None) -> _Parked:
        """The DLQ copy of a letter: to `target` (default: the templated DLQ topic of its topic)."""
        error = letter.error
        error_type = letter.error_type or error.error_class
        kept = [(k, v) for k, v in letter.record.headers or () if k not in ERROR_HEADERS]
        record = letter.record
        added = error_headers(topic=record.topic, partition=record.partition, offset=record.offset,
                              error_type=error_type, reason=error.message, edge=error.edge,
                              error_class=error.error_class, reason_tag=error.reason or error_type, attempt=letter.attempt)
        return _Parked(owner, target or dlq_topic(self.topic_template, record.topic), record.key, letter.value,
                       [*kept, *added])

    def _produce(self, parked: _Parked) -> None:
        parked.attempts += 1
        def delivered(error: KafkaError | None, _message: Message) -> None:
            self._on_delivery(error, parked)

        while True:
            try:
                self._producer.produce(parked.topic, value=parked.value, key=parked.key, headers=parked.headers,
                                       on_delivery=delivered)
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
            parked.owner.outstanding -= 1
            if not parked.owner.outstanding:
                self._delivered.append(parked.owner.token)
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
            factor, configs = kafka_clients.replication_for(len(self._admin.list_topics(timeout=10).brokers))
            if kafka_clients.ensure_topics(self._admin, [topic], partitions=1, replication=factor, configs=configs,
                                           timeout=10)[topic] == "created":
                log.info("created DLQ topic %s (replication factor %d)", topic, factor)
        except KafkaException as exc:
            log.warning("could not create DLQ topic %s (producing anyway): %s", topic, exc)
        self._known_topics.add(topic)


# --- reading and replaying a DLQ (`cdc dlq list|replay`) ------------------------------------------------

def header_map(headers: Sequence[tuple[str, bytes | None]] | None) -> dict[str, str]:
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

    def _copy(self, owner: _Owner, letter: DeadLetter, target: str | None = None) -> _Parked:
        record = letter.record
        parked = header_map(record.headers)
        partition, offset = parked.get("cdc.original.partition"), parked.get("cdc.original.offset")
        origin = dataclasses.replace(record, topic=parked.get("cdc.original.topic", record.topic),
                                     partition=int(partition) if partition is not None else record.partition,
                                     offset=int(offset) if offset is not None else record.offset)
        original = dataclasses.replace(letter, record=origin,
                                       attempt=int(parked.get(ATTEMPT_HEADER, "1") or 1) + 1)
        return super()._copy(owner, original, self.dlq_topic_name)
