"""A record waiting for an unreachable schema registry: held (rewound, not parked), retried after a backoff,
and never left waiting for good.

The loop is driven directly with a fake Kafka consumer, sink and DLQ (the broker-backed behaviour is in
tests/integration/test_consume_failures.py and tests/e2e/test_registry_outage.py).
"""

from __future__ import annotations

from confluent_kafka import TopicPartition

from cdc_consumer.consumer import ChangeConsumer, ConsumerSettings
from cdc_consumer.errors import RegistryUnavailable
from cdc_consumer.events import ChangeEvent, Op, RecordContext

REASON = "registry_unavailable"


class FakeKafkaConsumer:
    def __init__(self) -> None:
        self.assigned: list[TopicPartition] = []
        self.paused: set[tuple[str, int]] = set()
        self.seeks: list[tuple[str, int, int]] = []

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

    def commit(self, offsets, asynchronous=False):
        return offsets


class FakeMessage:
    def __init__(self, topic: str, partition: int, offset: int) -> None:
        self._where = (topic, partition, offset)

    def error(self):
        return None

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


class IdleSink:
    buffered = 0

    def flush(self):
        pass

    def poll(self):
        return []

    def rejected(self):
        return []

    def drain(self, timeout):
        return True


class IdleDlq:
    def poll(self, timeout):
        return []

    def flush(self):
        pass

    def drain(self, timeout):
        return True


class SkipEverything:
    """A mapping that skips every table: a decoded record is done at once (no sink involved)."""

    def is_skipped(self, event):
        return True


class Registry:
    """A decode function whose registry is down until `up` is set."""

    def __init__(self) -> None:
        self.up = False
        self.calls = 0

    def decode(self, record: RecordContext, value):
        self.calls += 1
        if not self.up:
            raise RegistryUnavailable("schema registry unreachable", topic=record.topic, partition=record.partition,
                                      offset=record.offset)
        return ChangeEvent(topic=record.topic, partition=record.partition, offset=record.offset, op=Op.CREATE,
                           key={"id": 1},
                           before=None, after={"id": 1}, source=None)


def loop(registry: Registry) -> tuple[ChangeConsumer, FakeKafkaConsumer]:
    settings = ConsumerSettings("127.0.0.1:1", "g", ("t",), retry_initial=0.2, retry_max=1.0, progress_every=0,
                                lag_every=10**9, commit_interval=10**9)
    consumer = ChangeConsumer(settings, registry.decode, SkipEverything(), IdleSink(), IdleDlq())
    kafka = FakeKafkaConsumer()
    consumer._consumer = kafka
    consumer._on_assign(kafka, [TopicPartition("t", 0), TopicPartition("t", 1)])
    return consumer, kafka


def backoff_passes(consumer: ChangeConsumer) -> None:
    consumer._hold_until = 0.0  # the test's clock: the wait is over
    consumer._step()


def gauge(consumer: ChangeConsumer) -> float:
    return consumer.metrics.registry.get_sample_value("cdc_consumer_paused", {"reason": REASON})


def test_a_record_whose_schema_cannot_be_fetched_is_rewound_and_every_partition_paused():
    registry = Registry()
    consumer, kafka = loop(registry)
    consumer._handle(FakeMessage("t", 0, 7))
    assert kafka.seeks == [("t", 0, 7)]
    assert kafka.paused == {("t", 0), ("t", 1)}
    assert gauge(consumer) == 1 and consumer.totals.consumed == 0 and consumer.totals.dlq == 0


def test_the_pause_lasts_through_failed_retries_and_ends_when_the_record_decodes():
    registry = Registry()
    consumer, kafka = loop(registry)
    consumer._handle(FakeMessage("t", 0, 7))
    since = consumer.pauses[REASON].since
    backoff_passes(consumer)
    assert kafka.paused == set(), "the retry resumes consumption"
    assert gauge(consumer) == 1, "but the pause reason stays while the record has not decoded"
    consumer._handle(FakeMessage("t", 0, 7))  # redelivered, registry still down
    assert consumer._hold_attempts == 2 and kafka.paused == {("t", 0), ("t", 1)}
    assert consumer.pauses[REASON].since == since, "one pause for the whole outage, not one per retry"
    backoff_passes(consumer)
    registry.up = True
    consumer._handle(FakeMessage("t", 0, 7))
    assert gauge(consumer) == 0 and REASON not in consumer.pauses
    assert consumer.totals.skipped == 1 and consumer.totals.dlq == 0


def test_a_rebalance_that_takes_the_held_partition_away_does_not_leave_the_consumer_paused():
    registry = Registry()
    consumer, kafka = loop(registry)
    consumer._handle(FakeMessage("t", 0, 7))
    consumer._on_revoke(kafka, kafka.assignment())
    consumer._on_assign(kafka, [TopicPartition("t", 1)])  # the held partition now belongs to another member
    assert kafka.paused == {("t", 1)}
    backoff_passes(consumer)
    assert kafka.paused == set() and gauge(consumer) == 0, "nothing waits any more: consumption resumes"
