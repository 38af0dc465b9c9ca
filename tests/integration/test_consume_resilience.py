"""`cdc consume` under failure: SIGKILL and restart, SIGTERM mid-stream, Cassandra unreachable, shared groups."""

from __future__ import annotations

import signal
from datetime import UTC, datetime

import pytest
from cassandra.cluster import Cluster
from cassandra.policies import ConstantReconnectionPolicy

from bench.envelopes import Stream, kline_stream, ticker_stream
from cdc_consumer import schema
from tests.integration.consume_support import (
    assert_row_matches,
    build_consumer,
    cdc_consume,
    committed_offsets,
    create_topic,
    epoch_us,
    produce,
    running,
    wait_caught_up,
)
from tests.integration.tcp_proxy import TcpProxy
from tests.support import unique_name, wait_until

pytestmark = pytest.mark.integration
PARTITIONS = 3


@pytest.fixture()
def keyspace(cassandra_session):
    schema.apply_cql(cassandra_session, cassandra_session.keyspace)
    return cassandra_session


def produce_round_robin(bootstrap: str, topic: str, records: list, first_index: int = 0) -> None:
    """Record i goes to partition i % PARTITIONS, so its offset is known: i // PARTITIONS."""
    for partition in range(PARTITIONS):
        produce(bootstrap, topic, [r for i, r in enumerate(records, first_index) if i % PARTITIONS == partition],
                partition=partition)


def record_index(partition: int, offset: int) -> int:
    return offset * PARTITIONS + partition


def ticker_rows(session) -> dict:
    return {(r.symbol, r.event_time_us): r for r in session.execute("SELECT * FROM ticker_by_day")}


def assert_ticker_rows_equal(session, stream: Stream) -> None:
    rows = ticker_rows(session)
    assert len(rows) == len(stream.rows)
    for (symbol, event_time), source_row in stream.rows.items():
        assert_row_matches(rows[(symbol, epoch_us(event_time))], source_row, derived={"day": event_time.date()})


def slow_consumer_args(topic: str, group: str, keyspace: str) -> list[str]:
    """One request in flight and small batches: slow enough to stop it mid-stream deterministically."""
    return ["--topics", topic, "--group", group, "--cassandra-keyspace", keyspace, "--batch-size", "50",
            "--max-in-flight", "1", "--progress-every", "0"]


def test_sigkill_mid_stream_then_restart_converges_to_the_same_rows(kafka_bootstrap, kafka_topic, keyspace):
    stream = ticker_stream(3000, symbols=30, start=datetime(2031, 1, 1, tzinfo=UTC))
    create_topic(kafka_bootstrap, kafka_topic, PARTITIONS)
    group = unique_name("g")
    produce_round_robin(kafka_bootstrap, kafka_topic, stream.records[:2000])

    first = cdc_consume(*slow_consumer_args(kafka_topic, group, keyspace.keyspace))
    try:
        at_kill = wait_until(lambda: (c := committed_offsets(kafka_bootstrap, group, kafka_topic))
                             and sum(max(0, o) for o in c.values()) > 0 and c, timeout=60, interval=0.05,
                             what="the first commit")
        first.send_signal(signal.SIGKILL)
    finally:
        first.kill()
        first.wait(30)
    assert sum(max(0, o) for o in at_kill.values()) < 2000, "the consumer was killed after the stream, not in it"

    produce_round_robin(kafka_bootstrap, kafka_topic, stream.records[2000:], first_index=2000)
    second = cdc_consume("--topics", kafka_topic, "--group", group, "--cassandra-keyspace", keyspace.keyspace)
    try:
        wait_caught_up(kafka_bootstrap, group, kafka_topic, timeout=120)
        second.send_signal(signal.SIGTERM)
        output, _ = second.communicate(timeout=60)
    finally:
        second.kill()
    assert second.returncode == 0, output
    assert_ticker_rows_equal(keyspace, stream)


def test_sigterm_mid_stream_drains_commits_and_exits_0_never_committing_unapplied_records(
        kafka_bootstrap, kafka_topic, keyspace):
    stream = ticker_stream(2000, symbols=20, start=datetime(2032, 1, 1, tzinfo=UTC))
    create_topic(kafka_bootstrap, kafka_topic, PARTITIONS)
    group = unique_name("g")
    produce_round_robin(kafka_bootstrap, kafka_topic, stream.records)

    process = cdc_consume(*slow_consumer_args(kafka_topic, group, keyspace.keyspace))
    try:
        wait_until(lambda: sum(max(0, o) for o in committed_offsets(kafka_bootstrap, group, kafka_topic).values()),
                   timeout=60, interval=0.05, what="the first commit")
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 0, output
    assert "stopped: consumed" in output

    committed = committed_offsets(kafka_bootstrap, group, kafka_topic)
    assert sum(max(0, o) for o in committed.values()) < len(stream.records), "stopped after the stream, not in it"
    stored = ticker_rows(keyspace)
    sources = list(stream.rows.values())
    for partition, end in committed.items():
        for offset in range(max(0, end)):  # every committed record is in Cassandra
            row = sources[record_index(partition, offset)]
            assert (row["symbol"], epoch_us(row["event_time"])) in stored, (partition, offset)


def test_cassandra_unreachable_pauses_without_committing_and_converges_after(kafka_bootstrap, kafka_topic,
                                                                              keyspace):
    stream = kline_stream(600, symbols=10, start=datetime(2033, 1, 1, tzinfo=UTC))
    create_topic(kafka_bootstrap, kafka_topic, PARTITIONS)
    group = unique_name("g")
    proxy = TcpProxy(("127.0.0.1", keyspace.cluster.port)).start()
    cluster = Cluster(["127.0.0.1"], port=proxy.port, protocol_version=5,
                      reconnection_policy=ConstantReconnectionPolicy(0.5))
    session = cluster.connect(keyspace.keyspace)
    consumer = build_consumer(kafka_bootstrap, session, kafka_topic, group, retry_max=1.0)
    try:
        with running(consumer):
            produce_round_robin(kafka_bootstrap, kafka_topic, stream.records[:300])
            wait_caught_up(kafka_bootstrap, group, kafka_topic)
            applied_part = committed_offsets(kafka_bootstrap, group, kafka_topic)

            proxy.cut()  # Cassandra vanishes for this consumer only
            produce_round_robin(kafka_bootstrap, kafka_topic, stream.records[300:], first_index=300)
            wait_until(lambda: consumer.paused, timeout=60, what="the consumer to pause its partitions")
            wait_until(lambda: consumer.sink.stats.failures >= 3, timeout=60, what="several failed write attempts")
            assert committed_offsets(kafka_bootstrap, group, kafka_topic) == applied_part

            proxy.start()  # Cassandra is back
            wait_caught_up(kafka_bootstrap, group, kafka_topic, timeout=120)
            wait_until(lambda: not consumer.paused, timeout=30, what="the consumer to resume")
    finally:
        proxy.cut()
        cluster.shutdown()
    rows = list(keyspace.execute("SELECT * FROM klines_by_bucket"))
    assert len(rows) == len(stream.rows) == 600
    by_key = {(r.symbol, r.interval, r.open_time): r for r in rows}
    for (symbol, interval, open_time), source_row in stream.rows.items():
        assert_row_matches(by_key[(symbol, interval, open_time.replace(tzinfo=None))], source_row,
                           derived={"bucket": open_time.date()})


def test_consumers_of_one_group_share_the_partitions(kafka_bootstrap, kafka_topic, keyspace):
    stream = kline_stream(1000, symbols=25, start=datetime(2034, 1, 1, tzinfo=UTC))
    create_topic(kafka_bootstrap, kafka_topic, 4)
    group = unique_name("g")
    first = build_consumer(kafka_bootstrap, keyspace, kafka_topic, group)
    second = build_consumer(kafka_bootstrap, keyspace, kafka_topic, group)
    with running(first), running(second):
        wait_until(lambda: first.progress and second.progress and len({*first.progress, *second.progress}) == 4,
                   timeout=60, what="both consumers to own partitions")
        produce(kafka_bootstrap, kafka_topic, stream.records)
        wait_caught_up(kafka_bootstrap, group, kafka_topic)
    assert first.totals.applied > 0 and second.totals.applied > 0
    assert first.totals.applied + second.totals.applied >= 1000
    assert keyspace.execute("SELECT count(*) FROM klines_by_bucket").one()[0] == 1000
