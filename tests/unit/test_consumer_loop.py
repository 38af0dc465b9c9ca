"""The `cdc consume` loop, specified against fake Kafka, Cassandra and DLQ edges (tests/unit/fakes.py).

Each test scripts what the group and the sink do, turns the loop (`poll_once`, or `run` to its end), and
checks what was committed, paused, parked and released. Offsets are literal: a record at offset n is done,
so the commit position is n + 1.
"""

from __future__ import annotations

import logging
import threading

import pytest
from confluent_kafka import KafkaError

from cdc_consumer import consumer as consumer_module
from cdc_consumer.errors import FatalError, TransientError
from cdc_consumer.pause_state import PauseStateFile
from tests.unit.fakes import TOPIC, FakeDlq, FakeKafkaConsumer, FakeMessage, FakeSink, started_loop

P0, P1 = (TOPIC, 0), (TOPIC, 1)
CASSANDRA_DOWN = TransientError("Unavailable: 0 of 1 replicas", edge="cassandra", reason="cassandra_unavailable")


def messages(partition: int, *offsets: int) -> list[FakeMessage]:
    return [FakeMessage(TOPIC, partition, offset) for offset in offsets]


def gauge(loop, reason: str) -> float | None:
    return loop.metrics.registry.get_sample_value("cdc_consumer_paused", {"reason": reason})


@pytest.fixture
def kafka() -> FakeKafkaConsumer:
    return FakeKafkaConsumer()


@pytest.fixture
def sink() -> FakeSink:
    return FakeSink()


@pytest.fixture
def dlq() -> FakeDlq:
    return FakeDlq()


@pytest.fixture
def loop(kafka, sink, dlq):
    loop = started_loop(kafka, sink, dlq)
    kafka.rebalance(P0, P1)
    loop.poll_once()
    return loop


class StopAfter:
    """run()'s stop signal: set after `turns` turns of the loop."""

    def __init__(self, turns: int) -> None:
        self.turns = turns

    def is_set(self) -> bool:
        self.turns -= 1
        return self.turns < 0


# ------------------------------------------------------------------------------------------ construction


def test_the_loop_builds_its_kafka_consumer_from_the_factory_with_manual_offsets(kafka, loop):
    assert kafka.topics == [TOPIC]
    assert kafka.config["group.id"] == "g" and kafka.config["bootstrap.servers"] == "127.0.0.1:1"
    assert kafka.config["enable.auto.commit"] is False and kafka.config["enable.auto.offset.store"] is False
    assert [(tp.topic, tp.partition) for tp in kafka.assignment()] == [P0, P1]


def test_run_drains_commits_and_closes_the_consumer_at_the_stop_signal(kafka, sink):
    loop = started_loop(kafka, sink)
    kafka.rebalance(P0)
    kafka.deliver(*messages(0, 0, 1, 2))
    assert loop.run(StopAfter(2)) is True
    assert kafka.committed == {P0: 3} and kafka.closed
    assert loop.totals.consumed == 3 and loop.totals.applied == 3


# ------------------------------------------------------------------------------------------ commits


def test_a_commit_never_passes_an_unacknowledged_record(kafka, sink, loop):
    kafka.deliver(*messages(0, 10, 11, 12))
    loop.poll_once()
    first, second, third = sink.sent
    sink.acknowledge(first, third)
    loop.poll_once()
    loop._commit()
    assert kafka.committed == {P0: 11}, "offset 11 is not acknowledged: nothing past it"
    sink.acknowledge(second)
    loop.poll_once()
    loop._commit()
    assert kafka.committed == {P0: 13}


def test_nothing_is_committed_before_the_first_record_of_a_partition_is_done(kafka, sink, loop):
    kafka.deliver(*messages(1, 5, 6))
    loop.poll_once()
    sink.acknowledge(sink.sent[1])
    loop.poll_once()
    loop._commit()
    assert kafka.commits == []


def test_a_parked_record_counts_as_done_once_the_dlq_acknowledges_it(kafka, sink, dlq, loop):
    kafka.deliver(*messages(0, 0, 1))
    loop.poll_once()
    sink.acknowledge(sink.sent[1])
    sink.reject(sink.sent[0])
    loop.poll_once()  # the rejected record goes to the DLQ
    loop._commit()
    assert [reason for _, reason in dlq.parked] == ["invalid_request"] and kafka.commits == []
    dlq.acknowledge()
    loop.poll_once()
    loop._commit()
    assert kafka.committed == {P0: 2} and loop.totals.dlq == 1 and loop.totals.applied == 1


def test_commits_happen_on_the_commit_tick_while_records_complete(kafka, sink):
    loop = started_loop(kafka, sink, commit_interval=0)  # every turn is a commit tick
    kafka.rebalance(P0)
    kafka.deliver(*messages(0, 0))
    loop.poll_once()
    sink.acknowledge()
    loop.poll_once()
    assert kafka.committed == {P0: 1}
    loop.poll_once()
    assert len(kafka.commits) == 1, "an unchanged position is not committed again"


# ------------------------------------------------------------------------------------------ per-partition commit errors


@pytest.mark.parametrize("code", [KafkaError.REBALANCE_IN_PROGRESS, KafkaError.NOT_COORDINATOR,
                                  KafkaError.COORDINATOR_LOAD_IN_PROGRESS, KafkaError.ILLEGAL_GENERATION])
def test_a_partition_whose_commit_fails_transiently_is_committed_on_the_next_tick(kafka, sink, loop, code):
    kafka.deliver(*messages(0, 0), *messages(1, 0))
    loop.poll_once()
    sink.acknowledge()
    loop.poll_once()
    kafka.commit_errors[P0] = KafkaError(code, "group busy")
    loop._commit()
    assert kafka.committed == {P1: 1}, "the other partition's commit stands"
    assert not loop.progress[P1].uncommitted and loop.progress[P0].uncommitted
    loop._commit()
    assert kafka.commits[-1] == {P0: 1}, "only the failed partition is sent again"
    assert kafka.committed == {P0: 1, P1: 1}


def test_a_failed_commit_request_is_logged_and_retried_not_fatal(kafka, sink, loop, caplog):
    kafka.deliver(*messages(0, 0))
    loop.poll_once()
    sink.acknowledge()
    loop.poll_once()
    kafka.commit_refused = KafkaError(KafkaError.REBALANCE_IN_PROGRESS, "rebalancing")
    with caplog.at_level(logging.WARNING):
        loop._commit()
    assert "offset commit failed" in caplog.text and "REBALANCE_IN_PROGRESS" in caplog.text
    kafka.commit_refused = None
    loop._commit()
    assert kafka.committed == {P0: 1}


@pytest.mark.parametrize("code", [KafkaError.GROUP_AUTHORIZATION_FAILED, KafkaError.TOPIC_AUTHORIZATION_FAILED])
def test_a_commit_refused_for_authorization_stops_the_process_with_a_clear_message(kafka, sink, code):
    loop = started_loop(kafka, sink, commit_interval=0)
    kafka.rebalance(P0)
    kafka.deliver(*messages(0, 0))
    kafka.commit_errors[P0] = KafkaError(code, "not authorized")
    with pytest.raises(FatalError) as raised:
        loop.run(StopAfter(3))
    assert raised.value.edge == "kafka" and raised.value.reason == "commit_unauthorized"
    assert "refused" in raised.value.message and KafkaError(code).name() in raised.value.message
    assert kafka.closed


# ------------------------------------------------------------------------------------------ Cassandra backpressure


def test_cassandra_backpressure_pauses_every_partition_and_commits_nothing_past_the_waiting_records(
        kafka, sink, loop):
    kafka.deliver(*messages(0, 0, 1))
    sink.down = CASSANDRA_DOWN
    loop.poll_once()
    assert kafka.paused == {P0, P1} and gauge(loop, "cassandra_unavailable") == 1
    kafka.deliver(*messages(1, 0))
    loop.poll_once()
    assert loop.totals.consumed == 2, "a paused partition delivers nothing"
    loop._commit()
    assert kafka.commits == []


def test_the_partitions_resume_once_cassandra_takes_writes_again(kafka, sink, loop):
    kafka.deliver(*messages(0, 0))
    sink.down = CASSANDRA_DOWN
    loop.poll_once()
    sink.down = None
    loop.poll_once()
    assert kafka.paused == set() and gauge(loop, "cassandra_unavailable") == 0 and not loop.pauses
    sink.acknowledge()
    loop.poll_once()
    loop._commit()
    assert kafka.committed == {P0: 1}


def test_the_pause_is_published_to_the_pause_state_file_and_cleared(kafka, sink, tmp_path):
    pause_file = PauseStateFile("g", tmp_path)
    loop = started_loop(kafka, sink)
    loop.pause_file = pause_file
    kafka.rebalance(P0)
    kafka.deliver(*messages(0, 0))
    sink.down = CASSANDRA_DOWN
    loop.poll_once()
    assert "cassandra_unavailable" in pause_file.path.read_text()
    sink.down = None
    loop.poll_once()
    assert "cassandra_unavailable" not in pause_file.path.read_text()


# ------------------------------------------------------------------------------------------ revoke and lost


def test_a_revoke_drains_commits_what_is_done_and_releases_the_partitions(kafka, sink, loop):
    kafka.deliver(*messages(0, 0, 1), *messages(1, 7))
    loop.poll_once()
    kafka.rebalance(P1)
    loop.poll_once()
    assert sink.drain_timeouts == [30.0]
    assert kafka.committed == {P0: 2, P1: 8}, "the drain acknowledged everything: all of it is committed"
    assert set(loop.progress) == {P1}


def test_a_revoke_commits_only_the_done_prefix_when_the_drain_runs_out(kafka, sink, loop):
    kafka.deliver(*messages(0, 0, 1, 2))
    loop.poll_once()
    sink.acknowledge_on_drain = False
    sink.acknowledge(sink.sent[0], sink.sent[2])
    kafka.rebalance(P1)
    loop.poll_once()
    assert kafka.committed == {P0: 1}, "offset 1 never got its acknowledgement"
    assert P0 not in loop.progress


def test_a_revoke_gives_the_sink_and_the_dlq_one_shared_deadline(kafka, sink, dlq, loop, monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(consumer_module, "time", clock)
    sink.on_drain = lambda: clock.advance(26.0)  # Cassandra takes 26 of the 30 s
    kafka.rebalance(P1)
    loop.poll_once()
    assert sink.drain_timeouts == [30.0] and dlq.drain_timeouts == [pytest.approx(4.0)]


def test_a_revoke_parks_what_cassandra_rejected_during_the_drain_and_commits_past_it(kafka, sink, dlq, loop):
    kafka.deliver(*messages(0, 0, 1))
    loop.poll_once()
    sink.acknowledge_on_drain = False
    sink.reject(sink.sent[0])
    sink.acknowledge()
    kafka.rebalance(P1)
    loop.poll_once()
    assert len(dlq.parked) == 1 and kafka.committed == {P0: 2}


def test_lost_partitions_are_not_committed_and_their_late_acknowledgements_change_nothing(kafka, sink, loop):
    kafka.deliver(*messages(0, 0, 1))
    loop.poll_once()
    kafka.lose()
    loop.poll_once()
    assert kafka.commits == [] and loop.progress == {}
    sink.acknowledge()
    kafka.rebalance(P0)  # the group gives P0 back: a fresh start from the committed offset
    loop.poll_once()
    loop._commit()
    assert kafka.commits == [], "acknowledgements of records read before the loss are not committed"


def test_a_rebalance_while_paused_keeps_new_partitions_paused_until_cassandra_is_back(kafka, sink, loop):
    kafka.deliver(*messages(0, 0))
    sink.down = CASSANDRA_DOWN
    loop.poll_once()
    kafka.rebalance(P1)  # librdkafka starts a new assignment unpaused
    loop.poll_once()
    assert kafka.paused == {P1}, "the loop pauses what it is given while it waits"
    assert gauge(loop, "cassandra_unavailable") == 1
    sink.down = None
    loop.poll_once()
    assert kafka.paused == set() and not loop.pauses


# ------------------------------------------------------------------------------------------ Kafka errors


def test_a_kafka_transport_error_pauses_the_loop_but_not_the_partitions(kafka, loop):
    kafka.deliver(FakeMessage.failure(KafkaError(KafkaError._ALL_BROKERS_DOWN, "3/3 brokers are down")))
    loop.poll_once()
    assert gauge(loop, "kafka_unavailable") == 1 and "kafka_unavailable" in loop.pauses
    assert kafka.paused == set(), "librdkafka reconnects by itself: pausing partitions would only delay it"
    loop.consumer_lag()  # the broker answers a watermark request again
    assert gauge(loop, "kafka_unavailable") == 0 and not loop.pauses


def test_the_end_of_a_partition_is_not_an_error(kafka, loop):
    kafka.deliver(FakeMessage.failure(KafkaError(KafkaError._PARTITION_EOF)))
    loop.poll_once()
    assert not loop.pauses and loop.totals.consumed == 0


def kafka_fenced(kafka: FakeKafkaConsumer, sink: FakeSink) -> None:
    kafka.deliver(FakeMessage.failure(KafkaError(KafkaError._FENCED, "fenced by a newer instance", fatal=True)))


def cassandra_table_dropped(kafka: FakeKafkaConsumer, sink: FakeSink) -> None:
    sink.fatal = FatalError("table cdc.klines no longer exists", edge="cassandra", reason="schema_lost")


@pytest.mark.parametrize(("fail", "edge", "says"), [(kafka_fenced, "kafka", "_FENCED"),
                                                    (cassandra_table_dropped, "cassandra", "no longer exists")])
def test_a_fatal_error_commits_the_done_prefix_and_stops(kafka, sink, fail, edge, says):
    loop = started_loop(kafka, sink)
    kafka.rebalance(P0)
    kafka.deliver(*messages(0, 0, 1))
    loop.poll_once()
    sink.acknowledge(sink.sent[0])
    fail(kafka, sink)
    with pytest.raises(FatalError) as raised:
        loop.run(threading.Event())
    assert raised.value.edge == edge and says in raised.value.message
    assert kafka.committed == {P0: 1}, "offset 1 was never acknowledged"
    assert kafka.closed


class FakeClock:
    """Stands in for the `time` module inside cdc_consumer.consumer: time passes only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now
