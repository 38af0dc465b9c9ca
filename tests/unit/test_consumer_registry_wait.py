"""A record waiting for an unreachable schema registry: held (rewound, not parked), retried after a backoff,
and never left waiting for good.

The loop is driven directly with the fake Kafka consumer, sink and DLQ of tests/unit/fakes.py (the
broker-backed behaviour is in tests/integration/test_consume_failures.py and tests/e2e/test_registry_outage.py).
"""

from __future__ import annotations

from cdc_consumer.consumer import ChangeConsumer
from cdc_consumer.errors import RegistryUnavailable
from cdc_consumer.events import ChangeEvent, Op, RecordContext
from tests.unit.fakes import FakeKafkaConsumer, FakeMessage, started_loop

REASON = "registry_unavailable"


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
                           key={"id": 1}, before=None, after={"id": 1}, source=None)


def loop(registry: Registry) -> tuple[ChangeConsumer, FakeKafkaConsumer]:
    kafka = FakeKafkaConsumer()
    consumer = started_loop(kafka, decode_fn=registry.decode, mapping=SkipEverything(), topics=("t",),
                            retry_initial=30.0, retry_max=60.0)  # the test says when a backoff passed
    kafka.rebalance(("t", 0), ("t", 1))
    consumer.poll_once()
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
    kafka.rebalance(("t", 1))  # the held partition now belongs to another member
    consumer.poll_once()
    assert kafka.paused == {("t", 1)}
    backoff_passes(consumer)
    assert kafka.paused == set() and gauge(consumer) == 0, "nothing waits any more: consumption resumes"


def test_a_record_of_another_partition_decoding_does_not_end_the_wait():
    """Records fetched before the pause (schemas cached) decode fine; they say nothing about the registry."""
    registry = Registry()
    consumer, kafka = loop(registry)
    consumer._handle(FakeMessage("t", 0, 7))
    backoff_passes(consumer)
    registry.up = True  # as far as partition 1's cached schema goes
    consumer._handle(FakeMessage("t", 1, 3))
    assert gauge(consumer) == 1, "partition 0's record has not been retried yet"
    consumer._handle(FakeMessage("t", 0, 7))
    assert gauge(consumer) == 0 and consumer.totals.dlq == 0
