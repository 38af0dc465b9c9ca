"""The `cdc consume` loop: Kafka consumer -> decoder -> mapping -> Cassandra sink (+ DLQ), with manual offsets.

Delivery: auto-commit and auto offset store are off. Every record read is tracked per partition in
arrival order; it is *done* when its Cassandra writes are acknowledged, its DLQ copy is acknowledged,
or it was deliberately skipped. The committed offset of a partition is 1 + the last offset of its
done prefix, so a commit never passes an unapplied record. Writes are idempotent (USING TIMESTAMP from
the source), so records redelivered after a crash or rebalance change nothing: at-least-once delivery
plus idempotent writes = exactly once in effect.

While Cassandra rejects writes the sink raises SinkBackpressure: all assigned partitions are paused
(poll() keeps running so the group membership stays alive), the sink retries with backoff, and
consumption resumes once the failed requests went through.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter as Tally
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    KafkaError,
    KafkaException,
    TopicPartition,
)

from cdc_consumer import kafka_clients
from cdc_consumer.config import KafkaSettings
from cdc_consumer.dlq import DeadLetterQueue
from cdc_consumer.events import ChangeEvent, DecodeError, Op
from cdc_consumer.mapping import CompiledMapping, UnmappableRecord
from cdc_consumer.metrics import ConsumerMetrics
from cdc_consumer.sink import CassandraSink, SinkBackpressure

log = logging.getLogger(__name__)

DEFAULT_TOPICS = r"^cdc\.public\.(ticker_24h|klines|order_book|trades)$"
ON_TRUNCATE = ("ignore", "dlq")

DecodeFn = Callable[[str, Any, Any, Any, int, int], ChangeEvent]


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

    __slots__ = ("done", "offset", "partition", "table", "topic", "ts_us")

    def __init__(self, topic: str, partition: int, offset: int) -> None:
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.table: str | None = None
        self.ts_us: int | None = None
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
    def __init__(self, settings: ConsumerSettings, decode: DecodeFn, mapping: CompiledMapping,
                 sink: CassandraSink, dlq: DeadLetterQueue, metrics: ConsumerMetrics | None = None) -> None:
        if settings.on_truncate not in ON_TRUNCATE:
            raise ValueError(f"on_truncate must be one of {', '.join(ON_TRUNCATE)}")
        self.settings = settings
        self.decode = decode
        self.mapping = mapping
        self.sink = sink
        self.dlq = dlq
        self.metrics = metrics or ConsumerMetrics()
        self.totals = Totals()
        self.progress: dict[tuple[str, int], PartitionProgress] = {}
        self.paused = False
        self._consumer: Consumer | None = None
        self._rewound: set[tuple[str, int]] = set()
        self._last_commit = 0.0
        self._last_progress = time.monotonic()
        self._last_lag_check = 0.0
        self.lag = 0
        self._progress_consumed = 0
        self._consumed_counters: dict[str, Any] = {}

    # ------------------------------------------------------------------------------ main loop

    def run(self, stop: threading.Event) -> bool:
        """Consume until `stop` is set; then drain, commit and leave the group. True if fully drained."""
        consumer = self._consumer = kafka_clients.consumer(
            KafkaSettings(self.settings.bootstrap, self.settings.kafka_config), self.settings.consumer_config())
        consumer.subscribe(list(self.settings.topics), on_assign=self._on_assign, on_revoke=self._on_revoke,
                           on_lost=self._on_lost)
        log.info("consuming %s as group %s", ", ".join(self.settings.topics), self.settings.group)
        try:
            while not stop.is_set():
                messages = consumer.consume(self.settings.batch_size, self.settings.max_wait)
                for message in messages:
                    self._handle(message)
                self._step()
            return self._shutdown()
        finally:
            consumer.close()
            self._consumer = None

    def _step(self) -> None:
        """After each consume(): send buffered writes, collect acknowledgements, commit, report."""
        try:
            if self.sink.buffered:
                self.sink.flush()
            self._release(self.sink.poll())
            self.sink.raise_if_failing()
        except SinkBackpressure as exc:
            self._pause(exc)
        else:
            if self.paused:
                self._resume()
        self._release(self.dlq.poll(0))
        if time.monotonic() - self._last_commit >= self.settings.commit_interval:
            self._commit()
        now = time.monotonic()
        if now - self._last_lag_check >= self.settings.lag_every:
            self._last_lag_check = now
            self.lag = self.consumer_lag()
        if self.settings.progress_every and now - self._last_progress >= self.settings.progress_every:
            self._report_progress()

    def _shutdown(self) -> bool:
        drained = self.sink.drain(self.settings.drain_timeout)
        self._release(self.sink.poll())
        drained = self.dlq.flush(self.settings.drain_timeout) and drained
        self._release(self.dlq.poll(0))
        self._commit()
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
            if error.code() != KafkaError._PARTITION_EOF:
                log.warning("consumer error: %s", error)
            return
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        record = Record(topic, partition, offset)
        progress = self.progress.get((topic, partition))
        if progress is None:  # a message of a partition we no longer own
            return
        progress.add(record)
        self.totals.consumed += 1
        self._consumed_counter(topic).inc()
        try:
            event = self.decode(topic, message.key(), message.value(), message.headers(), partition, offset)
        except DecodeError as exc:  # error type: the subclass (InvalidJson, UnknownSchemaId, ...)
            self._to_dlq(record, message, type(exc).__name__, exc.reason)
            return
        except Exception as exc:  # noqa: BLE001 - a decoder bug on one record must not stop the stream
            self._to_dlq(record, message, type(exc).__name__, str(exc))
            return
        skip = self._skip_reason(event)
        if skip == "truncate" and self.settings.on_truncate == "dlq":
            self._to_dlq(record, message, "Truncate", f"TRUNCATE of {event.table} (--on-truncate dlq)")
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
        try:
            writes = self.mapping.writes(event)
        except UnmappableRecord as exc:
            self._to_dlq(record, message, "UnmappableRecord", str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - a mapping bug on one record must not stop the stream
            self._to_dlq(record, message, type(exc).__name__, str(exc))
            return
        record.table = event.table
        record.ts_us = event.source.ts_us if event.source else None
        self.sink.add(record, writes)
        if self.sink.buffered >= self.settings.batch_size and not self.paused:
            try:
                self.sink.flush()
            except SinkBackpressure as exc:
                self._pause(exc)

    def _skip(self, record: Record, reason: str, event: ChangeEvent) -> None:
        if reason == "truncate":
            log.warning("ignoring TRUNCATE of %s at %s[%d]@%d (--on-truncate ignore)", event.table,
                        record.topic, record.partition, record.offset)
        self.totals.skipped += 1
        self.metrics.skipped.labels(record.topic, reason).inc()
        record.done = True
        self._advance(record)

    def _to_dlq(self, record: Record, message, error_type: str, reason: str) -> None:
        target = self.dlq.send(record, topic=record.topic, partition=record.partition, offset=record.offset,
                               key=message.key(), value=message.value(), headers=message.headers(),
                               error_type=error_type, reason=reason)
        self.totals.dlq += 1
        self.metrics.dlq.labels(record.topic, error_type).inc()
        log.warning("%s[%d]@%d -> %s: %s: %s", record.topic, record.partition, record.offset, target,
                    error_type, reason)

    def _release(self, records: list[Record]) -> None:
        """Mark acknowledged records done; count applied ones and their end-to-end lag."""
        if not records:
            return
        now_us = time.time() * 1e6
        applied: Tally = Tally()
        for record in records:
            record.done = True
            if record.table is not None:
                applied[(record.topic, record.table)] += 1
                if record.ts_us is not None:
                    self.metrics.end_to_end_lag.observe(max(0.0, (now_us - record.ts_us) / 1e6))
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
        self._last_commit = time.monotonic()
        keys = partitions if partitions is not None else list(self.progress)
        offsets = [TopicPartition(t, p, self.progress[(t, p)].position) for t, p in keys
                   if (t, p) in self.progress and self.progress[(t, p)].uncommitted]
        if not offsets or self._consumer is None:
            return
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:  # e.g. a rebalance in progress: the records will be redelivered
            log.warning("offset commit failed (records will be consumed again, writes are idempotent): %s", exc)
            return
        for tp in offsets:
            self.progress[(tp.topic, tp.partition)].committed = tp.offset

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.progress[(tp.topic, tp.partition)] = PartitionProgress()
            if self.settings.from_beginning and (tp.topic, tp.partition) not in self._rewound:
                tp.offset = OFFSET_BEGINNING  # replay once per process; later rebalances resume normally
                self._rewound.add((tp.topic, tp.partition))
        consumer.assign(partitions)
        if self.paused:
            consumer.pause(partitions)
        log.info("assigned %s", _describe(partitions))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Finish in-flight writes, commit what they completed, then let the partitions go."""
        self.sink.drain(self.settings.drain_timeout)
        self.dlq.flush(self.settings.drain_timeout)
        self._release(self.sink.poll())
        self._release(self.dlq.poll(0))
        keys = [(tp.topic, tp.partition) for tp in partitions]
        self._commit(keys)
        for key in keys:
            self.progress.pop(key, None)
        log.info("revoked %s", _describe(partitions))

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.progress.pop((tp.topic, tp.partition), None)
        log.warning("lost %s (not committed; the new owner will consume them again)", _describe(partitions))

    # ------------------------------------------------------------------------------ backpressure

    def _pause(self, exc: SinkBackpressure) -> None:
        if self.paused or self._consumer is None:
            return
        self._consumer.pause(self._consumer.assignment())
        self.paused = True
        self.metrics.paused.set(1)
        log.warning("paused consumption: %s", exc)

    def _resume(self) -> None:
        if self._consumer is not None:
            self._consumer.resume(self._consumer.assignment())
        self.paused = False
        self.metrics.paused.set(0)
        log.info("Cassandra writes succeed again: resumed consumption")

    # ------------------------------------------------------------------------------ progress

    def consumer_lag(self) -> int:
        """Sum over owned partitions of high watermark - commit position (updates the lag gauge)."""
        total = 0
        if self._consumer is None:
            return total
        for (topic, partition), progress in self.progress.items():
            try:
                _, high = self._consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=1.0)
            except KafkaException:
                continue
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
                 ", PAUSED (Cassandra writes failing)" if self.paused else "",
                 extra={"events_per_s": round(rate, 1), "consumed": self.totals.consumed,
                        "applied": self.totals.applied, "skipped": self.totals.skipped, "dlq": self.totals.dlq,
                        "lag": self.lag, "paused": self.paused})


def _describe(partitions: list[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions) or "nothing"
