"""Stand-ins for the edges of the `cdc consume` loop, so `ChangeConsumer` runs in unit tests without services.

`FakeKafkaConsumer` behaves like confluent_kafka.Consumer where the loop depends on it: rebalance callbacks
fire inside consume() (as librdkafka's do), a revoked or lost assignment is cleared after its callback, a
new assignment starts unpaused, a paused partition delivers nothing, and a synchronous commit answers per
partition (with an error the test chose, or none). `FakeSink` and `FakeDlq` acknowledge only what the test
says. The broker-backed behaviour is in tests/integration/test_consume*.py.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from cdc_consumer.consumer import ChangeConsumer, ConsumerSettings
from cdc_consumer.errors import FatalError, PermanentRecordError, SinkBackpressure, TransientError
from cdc_consumer.events import ChangeEvent, Op, RecordContext, Source

TOPIC = "cdc.public.klines"


class FakeMessage:
    def __init__(self, topic: str, partition: int, offset: int, error: KafkaError | None = None) -> None:
        self._where = (topic, partition, offset)
        self._error = error

    @classmethod
    def failure(cls, error: KafkaError) -> FakeMessage:
        """What consume() hands back for a client-level event such as all brokers down."""
        return cls("", -1, -1, error)

    def error(self):
        return self._error

    def topic(self):
        return self._where[0]

    def partition(self):
        return self._where[1]

    def offset(self):
        return self._where[2]

    def timestamp(self):
        return 1, 1_700_000_000_000  # (TIMESTAMP_CREATE_TIME, ms)

    def key(self):
        return b"k"

    def value(self):
        return b"v"

    def headers(self):
        return None


@dataclass
class Committed:
    """One partition of a synchronous commit's answer (confluent_kafka's TopicPartition.error is read-only)."""

    topic: str
    partition: int
    offset: int
    error: KafkaError | None = None


class FakeKafkaConsumer:
    def __init__(self) -> None:
        self.config: dict[str, Any] = {}
        self.topics: list[str] = []
        self.assigned: list[TopicPartition] = []
        self.paused: set[tuple[str, int]] = set()
        self.seeks: list[tuple[str, int, int]] = []
        self.commits: list[dict[tuple[str, int], int]] = []  # what each commit asked for
        self.committed: dict[tuple[str, int], int] = {}  # what the broker holds
        self.commit_errors: dict[tuple[str, int], KafkaError] = {}  # answered once, then forgotten
        self.commit_refused: KafkaError | None = None  # the whole request fails (KafkaException)
        self.closed = False
        self._callbacks: dict[str, Any] = {}
        self._rebalances: deque[tuple[str, list[TopicPartition]]] = deque()
        self._messages: deque[FakeMessage] = deque()

    # ---------------------------------------------------------------- what the test scripts

    def __call__(self, config: dict[str, Any]) -> FakeKafkaConsumer:
        """The loop's kafka_consumer factory."""
        self.config = config
        return self

    def rebalance(self, *partitions: tuple[str, int]) -> None:
        """The group hands this member `partitions` at the next consume() (revoking the current ones first)."""
        if self.assigned:
            self._rebalances.append(("revoke", list(self.assigned)))
        self._rebalances.append(("assign", [TopicPartition(t, p) for t, p in partitions]))

    def lose(self) -> None:
        """The member is thrown out of the group (session timeout): its partitions are lost, not revoked."""
        self._rebalances.append(("lost", list(self.assigned)))

    def deliver(self, *messages: FakeMessage) -> None:
        self._messages.extend(messages)

    # ---------------------------------------------------------------- confluent_kafka.Consumer

    def subscribe(self, topics, on_assign=None, on_revoke=None, on_lost=None):
        self.topics = list(topics)
        self._callbacks = {"assign": on_assign, "revoke": on_revoke, "lost": on_lost}

    def consume(self, num_messages=1, timeout=-1):
        while self._rebalances:
            kind, partitions = self._rebalances.popleft()
            self._callbacks[kind](self, partitions)
            if kind != "assign":
                self.assigned, self.paused = [], set()
        out, kept = [], deque()
        owned = {(tp.topic, tp.partition) for tp in self.assigned}
        for message in self._messages:
            where = (message.topic(), message.partition())
            if len(out) >= num_messages or (message.error() is None and where in self.paused):
                kept.append(message)
            elif message.error() is not None or where in owned:
                out.append(message)  # a message of a partition this member does not own is dropped
        self._messages = kept
        return out

    def assign(self, partitions):
        self.assigned = list(partitions)
        self.paused = set()  # as librdkafka: a new assignment starts unpaused

    def assignment(self):
        return list(self.assigned)

    def pause(self, partitions):
        self.paused |= {(tp.topic, tp.partition) for tp in partitions}

    def resume(self, partitions):
        self.paused -= {(tp.topic, tp.partition) for tp in partitions}

    def seek(self, tp):
        self.seeks.append((tp.topic, tp.partition, tp.offset))

    def commit(self, *, offsets, asynchronous=True):
        assert asynchronous is False, "the loop commits synchronously"
        if self.commit_refused is not None:
            raise KafkaException(self.commit_refused)
        self.commits.append({(tp.topic, tp.partition): tp.offset for tp in offsets})
        answer = []
        for tp in offsets:
            error = self.commit_errors.pop((tp.topic, tp.partition), None)
            if error is None:
                self.committed[(tp.topic, tp.partition)] = tp.offset
            answer.append(Committed(tp.topic, tp.partition, tp.offset, error))
        return answer

    def get_watermark_offsets(self, tp, timeout=-1):
        return 0, 0

    def position(self, partitions):
        return [TopicPartition(tp.topic, tp.partition, 0) for tp in partitions]

    def close(self):
        self.closed = True


class FakeSink:
    """Cassandra as the loop sees it: flush() sends what is buffered, the test acknowledges or rejects
    sent records; while `down` holds a TransientError, flush() and raise_if_failing() raise backpressure."""

    def __init__(self) -> None:
        self.down: TransientError | None = None
        self.fatal: FatalError | None = None
        self.on_drain = None  # called by drain() before it settles (e.g. to let a fake clock run)
        self.acknowledge_on_drain = True
        self.drain_timeouts: list[float] = []
        self._buffer: list[Any] = []
        self._sent: list[Any] = []
        self._released: list[Any] = []
        self._rejected: list[tuple[Any, PermanentRecordError]] = []

    def acknowledge(self, *records) -> None:
        """Cassandra acknowledges these sent records (all sent ones if none are named)."""
        for record in records or list(self._sent):
            self._sent.remove(record)
            self._released.append(record)

    def reject(self, record, reason: str = "invalid_request") -> None:
        self._sent.remove(record)
        self._rejected.append((record, PermanentRecordError("rejected", edge="cassandra", reason=reason)))

    @property
    def sent(self) -> list[Any]:
        return list(self._sent)

    # the interface the loop uses (CassandraSink's)

    def add(self, token, writes) -> None:
        self._buffer.append(token)

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    @property
    def in_flight(self) -> int:
        return len(self._sent)

    def raise_if_failing(self) -> None:
        if self.fatal is not None:
            raise self.fatal
        if self.down is not None:
            raise SinkBackpressure(0.5, self.down)

    def flush(self) -> None:
        self.raise_if_failing()
        self._sent.extend(self._buffer)
        self._buffer.clear()

    def poll(self, timeout: float = 0.0) -> list[Any]:
        released, self._released = self._released, []
        return released

    def rejected(self):
        rejected, self._rejected = self._rejected, []
        return rejected

    def drain(self, timeout: float) -> bool:
        self.drain_timeouts.append(timeout)
        if self.on_drain is not None:
            self.on_drain()
        if self.down is None:
            self._sent.extend(self._buffer)
            self._buffer.clear()
            if self.acknowledge_on_drain:
                self.acknowledge()
        return not self._buffer and not self._sent

    def close(self, timeout: float = 10.0) -> bool:
        return self.drain(timeout)


class FakeDlq:
    """The dead-letter producer: parked records are acknowledged by acknowledge() or by drain()."""

    def __init__(self) -> None:
        self.parked: list[tuple[Any, str]] = []  # (record, reason tag) in the order sent
        self.drain_timeouts: list[float] = []
        self.failed: FatalError | None = None
        self._unacknowledged: list[Any] = []
        self._acknowledged: list[Any] = []

    def acknowledge(self) -> None:
        self._acknowledged.extend(self._unacknowledged)
        self._unacknowledged.clear()

    def add(self, token, letters) -> None:
        for letter in letters:
            self.parked.append((token, letter.error.reason))
        self._unacknowledged.append(token)

    def poll(self, timeout: float = 0.0) -> list[Any]:
        done, self._acknowledged = self._acknowledged, []
        return done

    def flush(self) -> None:
        if self.failed is not None:
            raise self.failed

    def drain(self, timeout: float) -> bool:
        self.drain_timeouts.append(timeout)
        self.acknowledge()
        return True

    def close(self, timeout: float = 10.0) -> bool:
        return self.drain(timeout)


class MapEverything:
    """Every record maps to one write (the loop never looks inside writes)."""

    def is_skipped(self, event: ChangeEvent) -> bool:
        return False

    def writes(self, event: ChangeEvent) -> list[Any]:
        return [("write", event.offset)]


def decode(record: RecordContext, value: Any) -> ChangeEvent:
    """A decoder that turns every record into an insert into public.klines."""
    source = Source(ts_us=None, lsn=None, tx_id=None, snapshot=None, db="db", schema="public", table="klines")
    return ChangeEvent(topic=record.topic, partition=record.partition, offset=record.offset, op=Op.CREATE,
                       key={"id": record.offset}, before=None, after={"id": record.offset}, source=source)


def loop_settings(**overrides: Any) -> ConsumerSettings:
    """Settings under the test's control: no timed commits, lag checks or progress lines unless asked."""
    defaults: dict[str, Any] = dict(topics=(TOPIC,), progress_every=0, lag_every=10**9, commit_interval=10**9,
                                    retry_initial=0.2, retry_max=1.0)
    return ConsumerSettings("127.0.0.1:1", "g", **{**defaults, **overrides})


def started_loop(kafka: FakeKafkaConsumer, sink: Any = None, dlq: Any = None, *, decode_fn: Any = decode,
                 mapping: Any = None, **settings: Any) -> ChangeConsumer:
    """A ChangeConsumer built on the fakes and started (subscribed; partitions come with kafka.rebalance())."""
    loop = ChangeConsumer(loop_settings(**settings), decode_fn, mapping or MapEverything(), sink or FakeSink(),
                          dlq or FakeDlq(), kafka_consumer=kafka)
    loop.start()
    return loop
