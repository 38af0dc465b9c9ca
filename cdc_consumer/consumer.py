"""The `cdc consume` loop: Kafka consumer -> decoder -> mapping -> Cassandra sink (+ DLQ), with manual offsets.

Delivery: auto-commit and auto offset store are off. Every record read is tracked per partition in
arrival order; it is *done* when its Cassandra writes are acknowledged, its DLQ copy is acknowledged,
or it was deliberately skipped. The committed offset of a partition is 1 + the last offset of its
done prefix, so a commit never passes an unapplied record. Writes are idempotent (USING TIMESTAMP from
the source), so records redelivered after a crash or rebalance change nothing: at-least-once delivery
plus idempotent writes = exactly once in effect. A synchronous commit answers per partition: a partition
whose commit failed (group rebalancing, coordinator moving) stays uncommitted and is sent again on the next
commit tick; an authorization refusal is fatal. A revoke and the shutdown drain the sink and the DLQ within
one shared deadline (`drain_timeout`).

The Kafka consumer comes from a factory (`kafka_consumer`): `cdc consume` passes kafka_clients.consumer,
the unit tests a fake (tests/unit/fakes.py), so pause, resume, revoke, lost and commit run without a broker.

Failures are classified per edge into the three kinds of `cdc_consumer.errors`:
- transient (Cassandra unavailable/timeouts/overloaded, registry unreachable or 5xx): all assigned
  partitions are paused (poll() keeps running so the group membership stays alive) for a reason tag,
  the failed work is retried with capped exponential backoff and jitter, and consumption resumes once
  it goes through. A record whose decoding needs the registry is not parked: its partition is rewound
  to it (seek) and it is decoded again after the backoff. While paused, a WARNING naming the reason is
  logged every progress interval, `cdc_consumer_paused{reason}` is 1, and the reason is published in
  the pause-state file `cdc status` reads (`pause_state.py`).
- permanent for one record (undecodable, unmappable, a value Cassandra rejects or cannot bind, a schema
  id the registry does not know): the record goes to `<topic>.dlq` with headers naming the edge, the
  error class and the message; the stream carries on.
- fatal (authentication refused, the live Cassandra schema lost a mapped table/column, the DLQ topic not
  writable): `run` commits what is done and raises the FatalError; `cdc consume` exits 1 with its message.
"""

from __future__ import annotations

import logging
import time
from collections import Counter as Tally
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from confluent_kafka import (
    OFFSET_BEGINNING,
    TIMESTAMP_CREATE_TIME,
    KafkaError,
    KafkaException,
    TopicPartition,
)

from cdc_consumer.dlq import DeadLetter
from cdc_consumer.errors import (
    ClassifiedError,
    DecodeError,
    FatalError,
    PermanentRecordError,
    RegistryError,
    SinkBackpressure,
    TransientError,
    UnmappableRecord,
    backoff_delay,
)
from cdc_consumer.events import ChangeEvent, Op, RecordContext
from cdc_consumer.evolution import SchemaEvolution
from cdc_consumer.mapping import CompiledMapping, Write
from cdc_consumer.metrics import STAGE_SAMPLE, ConsumerMetrics
from cdc_consumer.pause_state import Pause, PauseStateFile
from cdc_consumer.sink_protocol import Sink

log = logging.getLogger(__name__)

DEFAULT_TOPICS = r"^cdc\.public\.(ticker_24h|klines|order_book|trades)$"
ON_TRUNCATE = ("ignore", "dlq")

IGNORE = "<ignore>"  # a record_filter's answer for a record this run must not handle nor commit past
DecodeFn = Callable[[RecordContext, Any], ChangeEvent]  # (where the record came from, its value bytes)


class KafkaConsumer(Protocol):
    """The part of confluent_kafka.Consumer the loop uses (a fake one drives the unit tests)."""

    def subscribe(self, topics: list[str], on_assign: Any = ..., on_revoke: Any = ..., on_lost: Any = ...) -> None: ...
    def consume(self, num_messages: int = ..., timeout: float = ...) -> list[Any]: ...
    def assign(self, partitions: list[TopicPartition]) -> None: ...
    def assignment(self) -> list[TopicPartition]: ...
    def pause(self, partitions: list[TopicPartition]) -> None: ...
    def resume(self, partitions: list[TopicPartition]) -> None: ...
    def seek(self, partition: TopicPartition) -> None: ...
    def commit(self, *, offsets: list[TopicPartition], asynchronous: Literal[False]) -> list[TopicPartition]: ...
    def get_watermark_offsets(self, partition: TopicPartition, timeout: float = ...) -> tuple[int, int] | None: ...
    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]: ...
    def close(self) -> None: ...


class StopSignal(Protocol):
    """What run() polls between batches: a threading.Event, or `cdc dlq replay`'s end-of-replay test."""

    def is_set(self) -> bool: ...


# Builds the loop's Kafka consumer from ConsumerSettings.consumer_config(): in `cdc consume`,
# functools.partial(kafka_clients.consumer, kafka_settings); in the unit tests, a fake.
KafkaConsumerFactory = Callable[[dict[str, Any]], KafkaConsumer]

# Per-partition commit errors (TopicPartition.error after a synchronous commit). Group-membership churn
# is retried on the next commit tick (the offsets stay uncommitted, at worst records come again);
# a refused authorization cannot heal by itself: the process stops with a clear message.
COMMIT_RETRIED = frozenset({
    KafkaError.REBALANCE_IN_PROGRESS, KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.COORDINATOR_NOT_AVAILABLE, KafkaError.ILLEGAL_GENERATION, KafkaError.UNKNOWN_MEMBER_ID,
    KafkaError.REQUEST_TIMED_OUT, KafkaError._TIMED_OUT, KafkaError._TRANSPORT, KafkaError._WAIT_COORD,
})
COMMIT_FATAL = frozenset({KafkaError.GROUP_AUTHORIZATION_FAILED, KafkaError.TOPIC_AUTHORIZATION_FAILED})


@dataclass
class ConsumerSettings:
    bootstrap: str
    group: str = "cdc-consume"
    topics: tuple[str, ...] = (DEFAULT_TOPICS,)
    from_beginning: bool = False
    batch_size: int = 2000  # records per consume() call and at most per flush
    max_wait: float = 0.02  # seconds consume() waits for a batch to fill (bounds added latency)
    commit_interval: float = 0.2  # seconds between synchronous commits while records complete
    on_truncate: str = "ignore"
    drain_timeout: float = 30.0
    progress_every: float = 0.0  # seconds; 0 = no progress lines
    pause_warning_every: float = 10.0  # seconds between WARNING lines while paused (the progress interval if set)
    retry_initial: float = 0.5  # backoff of a record waiting for the schema registry
    retry_max: float = 10.0
    lag_every: float = 5.0  # seconds between consumer-lag measurements (gauge and progress line)
    kafka_config: dict = field(default_factory=dict, repr=False)  # may hold sasl.password

    def consumer_config(self) -> dict:
        return {
            "bootstrap.servers": self.bootstrap,
            "group.id": self.group,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",  # a new group starts with the snapshot, not after it
            "fetch.wait.max.ms": 10,  # low latency: the broker answers a fetch within 10 ms
            "fetch.min.bytes": 1,
            # Debezium JSON records with schemas are ~5 KB: the 1 MiB default would cap a fetch at ~200
            # records per partition and make a full consume() batch wait for several round trips.
            "max.partition.fetch.bytes": 8 << 20,
            "queued.max.messages.kbytes": 65536,
            # Debezium creates a table's topic with its first change: a regex subscription must notice
            # new topics within seconds, not librdkafka's default 5 minutes.
            "topic.metadata.refresh.interval.ms": 5000,
            "session.timeout.ms": 10000,
            "max.poll.interval.ms": 300000,
            **self.kafka_config,
        }


class Record:
    """One consumed Kafka record on its way to Cassandra or the DLQ (the sink/DLQ token)."""

    __slots__ = ("done", "kafka_ms", "message", "offset", "partition", "table", "topic", "ts_us")

    def __init__(self, topic: str, partition: int, offset: int, message: Any = None) -> None:
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.message = message  # kept until done: a write Cassandra rejects later is parked from it
        self.table: str | None = None
        self.ts_us: int | None = None
        self.kafka_ms: int | None = None  # Kafka CreateTime, on sampled records (the latency split)
        self.done = False


class PartitionProgress:
    """Records of one partition in arrival order; the commit position is after the done prefix."""

    def __init__(self) -> None:
        self.records: deque[Record] = deque()
        self.position: int | None = None  # next offset to commit
        self.committed: int | None = None

    def add(self, record: Record) -> None:
        self.records.append(record)

    def advance(self) -> None:
        records = self.records
        while records and records[0].done:
            self.position = records.popleft().offset + 1

    @property
    def uncommitted(self) -> bool:
        return self.position is not None and self.position != self.committed


@dataclass
class Totals:
    consumed: int = 0
    applied: int = 0
    skipped: int = 0
    dlq: int = 0


class ChangeConsumer:
    """The loop. Its Kafka consumer comes from `kafka_consumer` (called once per run() with the settings'
    consumer config), so a fake one can drive pause, resume, revoke, lost and commit in unit tests."""

    def __init__(self, settings: ConsumerSettings, decode: DecodeFn, mapping: CompiledMapping,
                 sink: Sink[Record, Write], dlq: Sink[Record, DeadLetter], metrics: ConsumerMetrics | None = None,
                 pause_file: PauseStateFile | None = None,
                 record_filter: Callable[[Any], str | None] | None = None,
                 evolution: SchemaEvolution | None = None, *, kafka_consumer: KafkaConsumerFactory) -> None:
        if settings.on_truncate not in ON_TRUNCATE:
            raise ValueError(f"on_truncate must be one of {', '.join(ON_TRUNCATE)}")
        self.settings = settings
        self.kafka_consumer = kafka_consumer
        self.decode = decode
        self.mapping = mapping
        self.sink = sink
        self.dlq = dlq
        self.metrics = metrics or ConsumerMetrics()
        self.totals = Totals()
        self.progress: dict[tuple[str, int], PartitionProgress] = {}
        self.pauses: dict[str, Pause] = {}  # reason -> since when, why
        self.paused = False  # partitions paused (Cassandra or registry waiting)
        self.pause_file = pause_file
        # message -> None (handle it), a skip reason (done, committed past), or IGNORE (`cdc dlq replay`)
        self.record_filter = record_filter
        self.evolution = evolution  # new source columns: ignored and counted, or added (evolution.py)
        self._held: dict[tuple[str, int], int] = {}  # partitions rewound to a record waiting for the registry
        self._retrying: set[tuple[str, int]] = set()  # held partitions resumed after the backoff, not yet decoded
        self._hold_attempts = 0
        self._hold_until = 0.0
        self._last_pause_warning = 0.0
        self._consumer: KafkaConsumer | None = None
        self._commit_failing_since: float | None = None
        self._last_commit_warning = 0.0
        self._rewound: set[tuple[str, int]] = set()
        self._last_commit = 0.0
        self._last_progress = time.monotonic()
        self._last_lag_check = 0.0
        self.lag = 0
        self._progress_consumed = 0
        self._consumed_counters: dict[str, Any] = {}

    # ------------------------------------------------------------------------------ main loop

    def run(self, stop: StopSignal) -> bool:
        """Consume until `stop` is set; then drain, commit and leave the group. True if fully drained."""
        self.start()
        try:
            while not stop.is_set():
                self.poll_once()
            return self._shutdown()
        except FatalError as exc:
            self._stop_after_fatal(exc)
            raise
        finally:
            self.close()

    def start(self) -> None:
        """Build the Kafka consumer and subscribe (partitions arrive through _on_assign during consume())."""
        consumer = self._consumer = self.kafka_consumer(self.settings.consumer_config())
        consumer.subscribe(list(self.settings.topics), on_assign=self._on_assign, on_revoke=self._on_revoke,
                           on_lost=self._on_lost)
        log.info("consuming %s as group %s", ", ".join(self.settings.topics), self.settings.group)
        self._publish_pauses()

    def poll_once(self) -> None:
        """One turn of the loop: a batch from Kafka through decode and mapping into the sink, then _step."""
        assert self._consumer is not None, "start() first"
        for message in self._consumer.consume(self.settings.batch_size, self.settings.max_wait):
            self._handle(message)
        self._step()

    def close(self) -> None:
        """Leave the group (without committing: run() commits before) and remove the pause-state file."""
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
        if self.pause_file is not None:
            self.pause_file.remove()

    def _stop_after_fatal(self, exc: FatalError) -> None:
        """Commit what is done (never past an unapplied record) and say why the process stops."""
        self._release(self.sink.poll())
        self._release(self.dlq.poll(0))
        try:
            self._commit()
        except FatalError as commit_error:  # the commit itself is refused: nothing more can be saved
            log.error("final commit refused: %s", commit_error.message)
        log.error("stopping: %s (%s edge; consumed %d, applied %d, dlq %d; nothing past an unapplied record "
                  "was committed)", exc.message, exc.edge, self.totals.consumed, self.totals.applied, self.totals.dlq)

    def _step(self) -> None:
        """After each consume(): send buffered writes, collect acknowledgements, commit, report."""
        try:
            self._release(self.sink.poll())
            self.sink.flush()  # sends what is buffered; raises while writes fail
        except SinkBackpressure as exc:
            self._pause(exc)
        else:
            if self.pauses:
                self._clear_pause("cassandra_unavailable")
        self._park_rejected()
        if "registry_unavailable" in self.pauses and time.monotonic() >= self._hold_until:
            self._retry_held()
        self._release(self.dlq.poll(0))
        self.dlq.flush()  # FatalError once a DLQ copy cannot be delivered
        if time.monotonic() - self._last_commit >= self.settings.commit_interval:
            self._commit()
        now = time.monotonic()
        if now - self._last_lag_check >= self.settings.lag_every:
            self._last_lag_check = now
            self.lag = self.consumer_lag()
        if self.settings.progress_every and now - self._last_progress >= self.settings.progress_every:
            self._report_progress()
        if self.pauses and now - self._last_pause_warning >= self._pause_warning_every:
            self._warn_paused()

    def _shutdown(self) -> bool:
        drained = self._drain()
        self._commit()
        if self.settings.progress_every:
            self._report_progress()  # the final figures, after the drain: what this process applied in all
        if not drained:
            log.error("stopping with unapplied records (Cassandra or the DLQ did not acknowledge in %.0fs); "
                      "they were not committed and will be consumed again", self.settings.drain_timeout)
        log.info("stopped: consumed %d, applied %d, skipped %d, dlq %d", self.totals.consumed,
                 self.totals.applied, self.totals.skipped, self.totals.dlq)
        return drained

    # ------------------------------------------------------------------------------ records

    def _handle(self, message) -> None:
        error = message.error()
        if error is not None:
            self._consumer_error(error)
            return
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        if self._held and (topic, partition) in self._held:
            return  # rewound to a record waiting for the registry: it and its successors come again
        record = Record(topic, partition, offset, message)
        progress = self.progress.get((topic, partition))
        if progress is None:  # a message of a partition we no longer own
            return
        filtered = self.record_filter(message) if self.record_filter is not None else None
        if filtered is IGNORE:
            return  # not this run's (a replay's end): neither tracked nor committed
        progress.add(record)
        self.totals.consumed += 1
        self._consumed_counter(topic).inc()
        if filtered is not None:
            self.totals.skipped += 1
            self.metrics.skipped.labels(topic, filtered).inc()
            record.done = True
            self._advance(record)
            return
        try:
            event = self.decode(RecordContext.of(message), message.value())
        except DecodeError as exc:  # error type: the subclass (InvalidJson, UnknownSchemaId, ...)
            classified = _classify_decode_error(exc)
            if isinstance(classified, TransientError):
                self._hold(record, classified)
            else:
                self._to_dlq(record, message, classified, error_type=type(exc).__name__)
            return
        except Exception as exc:  # noqa: BLE001 - a decoder bug on one record must not stop the stream
            self._to_dlq(record, message, PermanentRecordError(str(exc), edge="decoder", reason="decoder_bug",
                                                               error_class=type(exc).__name__))
            return
        if self._retrying and (topic, partition) in self._retrying:
            self._registry_answered((topic, partition))
            self._clear_pause("registry_unavailable")
        skip = self._skip_reason(event)
        if skip == "truncate" and self.settings.on_truncate == "dlq":
            self._to_dlq(record, message, PermanentRecordError(f"TRUNCATE of {event.table} (--on-truncate dlq)",
                                                               edge="decoder", reason="truncate",
                                                               error_class="Truncate"))
        elif skip is not None:
            self._skip(record, skip, event)
        else:
            self._apply(record, message, event)

    def _consumed_counter(self, topic: str):
        counter = self._consumed_counters.get(topic)
        if counter is None:
            counter = self._consumed_counters[topic] = self.metrics.consumed.labels(topic)
        return counter

    def _skip_reason(self, event: ChangeEvent) -> str | None:
        if event.tombstone:
            return "tombstone"
        if event.is_transaction_marker:
            return "transaction"
        if event.op is Op.TRUNCATE:
            return "truncate"
        if self.mapping.is_skipped(event):
            return "skipped_table"
        return None

    def _apply(self, record: Record, message, event: ChangeEvent) -> None:
        evolution = self.evolution
        if (evolution is not None and event.after is not None and event.source is not None
                and evolution.widths.get(event.source.table) != len(event.after)):
            self.mapping = evolution.check(event) or self.mapping  # FatalError if an ALTER fails
        try:
            writes = self.mapping.writes(event)
        except Exception as exc:  # noqa: BLE001 - UnmappableRecord, or a mapping bug on one record
            reason = "unmappable" if isinstance(exc, UnmappableRecord) else "mapping_bug"
            self._to_dlq(record, message, PermanentRecordError(str(exc), edge="mapping", reason=reason,
                                                               error_class=type(exc).__name__))
            return
        record.table = event.table
        record.ts_us = event.source.ts_us if event.source else None
        if not record.offset % STAGE_SAMPLE:
            kind, created_ms = message.timestamp()
            record.kafka_ms = created_ms if kind == TIMESTAMP_CREATE_TIME else None
        self.sink.add(record, writes)
        if self.sink.buffered >= self.settings.batch_size and not self.paused:
            try:
                self.sink.flush()
            except SinkBackpressure as exc:
                self._pause(exc)
            self._park_rejected()

    def _skip(self, record: Record, reason: str, event: ChangeEvent) -> None:
        if reason == "truncate":
            log.warning("ignoring TRUNCATE of %s at %s[%d]@%d (--on-truncate ignore)", event.table,
                        record.topic, record.partition, record.offset)
        self.totals.skipped += 1
        self.metrics.skipped.labels(record.topic, reason).inc()
        record.done = True
        self._advance(record)

    def _to_dlq(self, record: Record, message, error: ClassifiedError, error_type: str | None = None) -> None:
        """Park one record; `error_type` (cdc.error.type) defaults to the underlying error's class."""
        error_type = error_type or error.error_class
        record.table = None  # parked, not applied (a write Cassandra rejected had set it)
        self.dlq.add(record, (DeadLetter(RecordContext.of(message), message.value(), error, error_type),))
        self.totals.dlq += 1
        self.metrics.dlq.labels(record.topic, error_type).inc()

    def _park_rejected(self) -> None:
        """Records whose writes Cassandra rejected for good go to the DLQ (permanent for the record)."""
        for record, error in self.sink.rejected():  # the sink hands back the tokens this loop gave it
            self._to_dlq(record, record.message, error)

    def _release(self, records: list[Record]) -> None:
        """Mark acknowledged records done; count applied ones and their end-to-end lag."""
        if not records:
            return
        now_us = time.time() * 1e6
        applied: Tally = Tally()
        for record in records:
            record.done = True
            record.message = None
            if record.table is not None:
                applied[(record.topic, record.table)] += 1
                if record.ts_us is not None:
                    self.metrics.end_to_end_lag.observe(max(0.0, (now_us - record.ts_us) / 1e6))
                    if record.kafka_ms is not None:
                        self.metrics.commit_to_kafka.observe(max(0.0, (record.kafka_ms * 1000 - record.ts_us) / 1e6))
                        self.metrics.kafka_to_cassandra.observe(max(0.0, (now_us - record.kafka_ms * 1000) / 1e6))
            self._advance(record)
        for (topic, table), count in applied.items():
            self.metrics.applied.labels(topic, table).inc(count)
            self.totals.applied += count

    def _advance(self, record: Record) -> None:
        progress = self.progress.get((record.topic, record.partition))
        if progress is not None:
            progress.advance()

    # ------------------------------------------------------------------------------ offsets

    def _commit(self, partitions: list[tuple[str, int]] | None = None) -> None:
        """Commit the done prefix of each (given) partition; a partition whose commit fails stays uncommitted
        and is tried again on the next commit tick, unless the failure is fatal (FatalError)."""
        self._last_commit = time.monotonic()
        keys = partitions if partitions is not None else list(self.progress)
        offsets = [TopicPartition(t, p, position) for t, p in keys
                   if (t, p) in self.progress and self.progress[(t, p)].uncommitted
                   and (position := self.progress[(t, p)].position) is not None]
        if not offsets or self._consumer is None:
            return
        try:
            results = self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:  # the whole request failed, e.g. a rebalance in progress
            cause = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else KafkaError(
                KafkaError._FAIL, str(exc))
            self._commit_failed([_commit_error(cause, offsets)])
            return
        failures = []
        for tp in results:
            if tp.error is not None:
                failures.append(_commit_error(tp.error, [tp]))
            elif (tp.topic, tp.partition) in self.progress:
                self.progress[(tp.topic, tp.partition)].committed = tp.offset
        if failures:
            self._commit_failed(failures)
        elif self._commit_failing_since is not None:
            log.info("offset commits succeed again after %.1fs", time.monotonic() - self._commit_failing_since)
            self._commit_failing_since = None

    def _commit_failed(self, failures: list[ClassifiedError]) -> None:
        """Fatal ones stop the process; the others are logged (once, then every warning interval) and left
        for the next commit tick: the offsets stay uncommitted, nothing is lost (writes are idempotent)."""
        for failure in failures:
            if isinstance(failure, FatalError):
                raise failure
        now = time.monotonic()
        if self._commit_failing_since is None:
            self._commit_failing_since = now
        elif now - self._last_commit_warning < self._pause_warning_every:
            return
        self._last_commit_warning = now
        log.warning("offset commit failed, retried on the next commit (records may be consumed again, writes "
                    "are idempotent): %s", "; ".join(f.message for f in failures))

    def _on_assign(self, consumer: KafkaConsumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.progress[(tp.topic, tp.partition)] = PartitionProgress()
            if self.settings.from_beginning and (tp.topic, tp.partition) not in self._rewound:
                tp.offset = OFFSET_BEGINNING  # replay once per process; later rebalances resume normally
                self._rewound.add((tp.topic, tp.partition))
        consumer.assign(partitions)
        if self.paused:
            consumer.pause(partitions)
        log.info("assigned %s", _describe(partitions))

    def _drain(self) -> bool:
        """Finish in-flight work within ONE deadline of drain_timeout: Cassandra writes first, then the DLQ
        (which also takes what Cassandra rejected meanwhile) with whatever time the sink left. True if all
        was acknowledged; what was not stays uncommitted and is consumed again."""
        deadline = time.monotonic() + self.settings.drain_timeout
        drained = self.sink.drain(self.settings.drain_timeout)
        self._release(self.sink.poll())
        self._park_rejected()
        drained = self.dlq.drain(max(0.0, deadline - time.monotonic())) and drained
        self._release(self.dlq.poll(0))
        return drained

    def _on_revoke(self, consumer: KafkaConsumer, partitions: list[TopicPartition]) -> None:
        """Finish in-flight writes (one shared deadline), commit what they completed, then let the partitions go."""
        self._drain()
        keys = [(tp.topic, tp.partition) for tp in partitions]
        self._commit(keys)
        for key in keys:
            self.progress.pop(key, None)
            self._held.pop(key, None)
            self._retrying.discard(key)
        log.info("revoked %s", _describe(partitions))

    def _on_lost(self, consumer: KafkaConsumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.progress.pop((tp.topic, tp.partition), None)
            self._held.pop((tp.topic, tp.partition), None)
            self._retrying.discard((tp.topic, tp.partition))
        log.warning("lost %s (not committed; the new owner will consume them again)", _describe(partitions))

    # ------------------------------------------------------------------------------ backpressure

    def _pause(self, error: TransientError, pause_partitions: bool = True) -> None:
        """Record a pause reason (metric, state file, WARNING) and pause the assigned partitions."""
        pause = self.pauses.get(error.reason)
        if pause is None:
            self.pauses[error.reason] = Pause(error.reason, time.time(), error.describe())
            self.metrics.paused.labels(error.reason).set(1)
            log.warning("paused (%s): %s", error.reason, error.describe())
            self._last_pause_warning = time.monotonic()
            self._publish_pauses()
        else:
            pause.message = error.describe()
        if pause_partitions and not self.paused and self._consumer is not None:
            self._consumer.pause(self._consumer.assignment())
            self.paused = True

    def _clear_pause(self, reason: str) -> None:
        pause = self.pauses.pop(reason, None)
        if pause is None:
            return
        self.metrics.paused.labels(reason).set(0)
        log.info("%s cleared after %.1fs", reason, time.time() - pause.since)
        self._resume_unless_waiting()
        self._publish_pauses()

    def _resume_unless_waiting(self, also_ignoring: str | None = None) -> None:
        """Resume the partitions unless a reason that needs them paused remains (Kafka's own outage does
        not: the client reconnects by itself)."""
        ignored = ("kafka_unavailable", also_ignoring)
        if self.paused and not any(r not in ignored for r in self.pauses):
            if self._consumer is not None:
                self._consumer.resume(self._consumer.assignment())
            self.paused = False
            log.info("resumed consumption")

    @property
    def _pause_warning_every(self) -> float:
        return self.settings.progress_every or self.settings.pause_warning_every

    def _warn_paused(self) -> None:
        self._last_pause_warning = time.monotonic()
        now = time.time()
        for pause in self.pauses.values():
            log.warning("PAUSED for %.0fs, reason %s: %s (nothing is committed past the waiting records)",
                        now - pause.since, pause.reason, pause.message,
                        extra={"paused_reason": pause.reason, "paused_s": round(now - pause.since, 1)})
        self._publish_pauses()

    def _publish_pauses(self) -> None:
        if self.pause_file is not None:
            self.pause_file.write(list(self.pauses.values()))

    def _hold(self, record: Record, error: TransientError) -> None:
        """A record that must wait (its schema is in an unreachable registry): rewind its partition to it,
        pause, and decode it again after the backoff. It is neither parked nor skipped."""
        key = (record.topic, record.partition)
        progress = self.progress[key]
        progress.records.pop()  # the record was just added: it is consumed again after the rewind
        self.totals.consumed -= 1
        self._held[key] = record.offset
        self._retrying.discard(key)
        self._hold_attempts += 1
        delay = backoff_delay(self._hold_attempts, self.settings.retry_initial, self.settings.retry_max)
        self._hold_until = time.monotonic() + delay
        if self._consumer is not None:
            self._consumer.seek(TopicPartition(record.topic, record.partition, record.offset))
        self._pause(error)
        log.warning("%s[%d]@%d waits %.1fs (attempt %d): %s", record.topic, record.partition, record.offset, delay,
                    self._hold_attempts, error.describe())

    def _retry_held(self) -> None:
        """The backoff has passed: consume the held records again. The pause reason stays until a held
        record decodes (records of other partitions, fetched before the pause, say nothing about the
        registry), so the gauge and `cdc status` do not flap during an outage; a failure holds it again
        with a longer wait. If a rebalance took the held partitions away, nothing waits any more and the
        pause ends (without this, a rebalance during an outage left the consumer paused for good)."""
        if not self._held:
            self._registry_answered(None)
            return
        self._retrying |= self._held.keys()
        self._held.clear()
        # Nothing held when this passes (the retried record decoded, or its partition was revoked): clear.
        self._hold_until = time.monotonic() + self.settings.retry_max
        self._resume_unless_waiting(also_ignoring="registry_unavailable")

    def _registry_answered(self, key: tuple[str, int] | None) -> None:
        """A held record decoded (or nothing is held any more): the registry wait is over once no held
        partition is left to retry."""
        if key is None:
            self._retrying.clear()
        else:
            self._retrying.discard(key)
        if not self._retrying and not self._held:
            self._hold_attempts = 0
            self._clear_pause("registry_unavailable")

    def _consumer_error(self, error: KafkaError) -> None:
        if error.code() == KafkaError._PARTITION_EOF:
            return
        if error.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT):
            self._pause(TransientError(f"{error.name()}: {error.str()}", edge="kafka", reason="kafka_unavailable",
                                       error_class=error.name()), pause_partitions=False)
            return
        if error.fatal():
            raise FatalError(f"Kafka consumer failed: {error.name()}: {error.str()}", edge="kafka",
                             reason="kafka_fatal", error_class=error.name())
        log.warning("consumer error: %s", error)

    # ------------------------------------------------------------------------------ progress

    def consumer_lag(self) -> int:
        """Sum over owned partitions of high watermark - commit position (updates the lag gauge)."""
        total = 0
        if self._consumer is None:
            return total
        for (topic, partition), progress in self.progress.items():
            try:
                watermarks = self._consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=1.0)
            except KafkaException:
                continue
            if watermarks is None:  # librdkafka's answer to a timeout
                continue
            _, high = watermarks
            if "kafka_unavailable" in self.pauses:
                self._clear_pause("kafka_unavailable")  # the broker answers again
            position = progress.committed
            if position is None:  # nothing committed by us yet: measure from the fetch position
                position = self._consumer.position([TopicPartition(topic, partition)])[0].offset
            lag = max(0, high - position) if position >= 0 else 0
            self.metrics.consumer_lag.labels(topic, str(partition)).set(lag)
            total += lag
        return total

    def _report_progress(self) -> None:
        now = time.monotonic()
        rate = (self.totals.consumed - self._progress_consumed) / max(1e-9, now - self._last_progress)
        self._last_progress, self._progress_consumed = now, self.totals.consumed
        log.info("progress: %.0f events/s, consumed %d, applied %d, skipped %d, dlq %d, lag %d, "
                 "writes in flight %d, records buffered %d%s", rate, self.totals.consumed, self.totals.applied,
                 self.totals.skipped, self.totals.dlq, self.lag, self.sink.in_flight, self.sink.buffered,
                 f", PAUSED ({', '.join(self.pauses)})" if self.pauses else "",
                 extra={"events_per_s": round(rate, 1), "consumed": self.totals.consumed,
                        "applied": self.totals.applied, "skipped": self.totals.skipped, "dlq": self.totals.dlq,
                        "lag": self.lag, "paused": bool(self.pauses), "paused_reasons": sorted(self.pauses)})


def _classify_decode_error(exc: DecodeError) -> ClassifiedError:
    """Decoder edge: every decode error is permanent for its record, except the registry's own failures,
    which its edge classifies (unreachable/5xx transient, unknown id permanent)."""
    if isinstance(exc, RegistryError):
        from cdc_consumer.schema_registry import classify_registry_error  # only Avro streams get here

        return classify_registry_error(exc)
    return PermanentRecordError(exc.reason, edge="decoder", reason="undecodable", error_class=type(exc).__name__)


def _commit_error(error: KafkaError, partitions: list[TopicPartition]) -> ClassifiedError:
    """Classify a commit failure: authorization refused is fatal, anything else is retried on the next tick
    (COMMIT_RETRIED names the expected ones: group rebalancing, coordinator moving, timeouts)."""
    where = _describe(partitions)
    if error.code() in COMMIT_FATAL:
        return FatalError(f"offset commit of {where} refused: {error.name()}: {error.str()} (grant the consumer "
                          f"group READ on its group and topics)", edge="kafka", reason="commit_unauthorized",
                          error_class=error.name())
    expected = "" if error.code() in COMMIT_RETRIED else " (unexpected)"
    return TransientError(f"{where}: {error.name()}: {error.str()}{expected}", edge="kafka",
                          reason="commit_failed", error_class=error.name())


def _describe(partitions: list[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions) or "nothing"
