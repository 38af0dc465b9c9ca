"""`cdc consume` observability: Prometheus metrics, JSON logs with progress lines; --from-beginning."""

from __future__ import annotations

import json
import signal
import socket
import urllib.request
from datetime import UTC, datetime

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bench.envelopes import kline_stream, ticker_stream
from cdc_consumer import schema
from tests.integration.consume_support import (
    build_consumer,
    cdc_consume,
    create_topic,
    produce,
    running,
    wait_caught_up,
)
from tests.support import delete_topics, unique_name, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture()
def keyspace(cassandra_session):
    schema.apply_cql(cassandra_session, cassandra_session.keyspace)
    return cassandra_session


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def samples(port: int) -> dict[tuple, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def read_topic(bootstrap: str, topic: str, count: int) -> list:
    """The first `count` records of the topic, read with a plain consumer (not the code under test)."""
    from confluent_kafka import Consumer

    reader = Consumer({"bootstrap.servers": bootstrap, "group.id": unique_name("t_read"),
                       "auto.offset.reset": "earliest", "enable.auto.commit": False})
    reader.subscribe([topic])
    messages: list = []
    try:
        wait_until(lambda: messages.extend(m for m in reader.consume(count, 0.5) if not m.error()) or
                   len(messages) >= count, timeout=60, interval=0, what=f"{count} records of {topic}")
    finally:
        reader.close()
    return messages


def test_metrics_and_json_progress_lines_describe_what_was_applied(kafka_bootstrap, kafka_topic, keyspace):
    create_topic(kafka_bootstrap, kafka_topic, 2)
    tickers = ticker_stream(40, symbols=4, start=datetime(2036, 1, 1, tzinfo=UTC)).records
    klines = kline_stream(60, symbols=4, start=datetime(2036, 1, 1, tzinfo=UTC)).records
    produce(kafka_bootstrap, kafka_topic, [*tickers, *klines, (b"k", b"not json")])
    port, group = free_port(), unique_name("g")
    process = cdc_consume("--topics", kafka_topic, "--group", group, "--cassandra-keyspace", keyspace.keyspace,
                          "--metrics-port", str(port), "--log-format", "json", "--progress-every", "0.2")
    try:
        wait_caught_up(kafka_bootstrap, group, kafka_topic)
        metrics = wait_until(lambda: (m := samples(port)) and m.get(
            ("cdc_events_applied_total", (("table", "public.klines"), ("topic", kafka_topic)))) == 60 and m,
            timeout=30, what="the applied counters")
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 0, output

    assert metrics[("cdc_events_consumed_total", (("topic", kafka_topic),))] == 101
    assert metrics[("cdc_events_applied_total", (("table", "public.ticker_24h"), ("topic", kafka_topic)))] == 40
    assert metrics[("cdc_events_dlq_total", (("error_type", "InvalidJson"), ("topic", kafka_topic)))] == 1
    assert metrics[("cdc_rows_written_total", (("operation", "upsert"), ("table", "klines_by_bucket")))] == 60
    assert metrics[("cdc_end_to_end_lag_seconds_count", ())] == 100
    assert metrics[("cdc_batch_write_seconds_count", ())] > 0
    # The latency split is sampled on the applied records whose offset is a multiple of 8.
    sampled = sum(1 for m in read_topic(kafka_bootstrap, kafka_topic, 101) if m.offset() % 8 == 0 and m.key() != b"k")
    assert sampled > 0
    assert metrics[("cdc_commit_to_kafka_seconds_count", ())] == sampled
    assert metrics[("cdc_kafka_to_cassandra_seconds_count", ())] == sampled
    for reason in ("cassandra_unavailable", "registry_unavailable", "kafka_unavailable"):
        assert metrics[("cdc_consumer_paused", (("reason", reason),))] == 0

    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    assert lines and len(lines) == len(output.splitlines()), "every log line is JSON"
    progress = [line for line in lines if line["message"].startswith("progress:")]
    assert progress and progress[-1]["applied"] == 100 and progress[-1]["dlq"] == 1
    assert {"events_per_s", "consumed", "skipped", "paused"} <= set(progress[-1])


def test_from_beginning_replays_a_group_that_already_committed_everything(kafka_bootstrap, kafka_topic, keyspace):
    create_topic(kafka_bootstrap, kafka_topic, 1)
    produce(kafka_bootstrap, kafka_topic, kline_stream(30, symbols=3, start=datetime(2037, 1, 1, tzinfo=UTC)).records)
    group = unique_name("g")
    first = build_consumer(kafka_bootstrap, keyspace, kafka_topic, group)
    with running(first):
        wait_caught_up(kafka_bootstrap, group, kafka_topic)
    again = build_consumer(kafka_bootstrap, keyspace, kafka_topic, group, from_beginning=True)
    with running(again):
        wait_until(lambda: again.totals.applied == 30, timeout=60, what="the replay of all 30 records")
    resumed = build_consumer(kafka_bootstrap, keyspace, kafka_topic, group)
    with running(resumed):
        wait_until(lambda: resumed.progress, timeout=60, what="an assignment")
        produce(kafka_bootstrap, kafka_topic,
                kline_stream(5, symbols=1, start=datetime(2037, 2, 1, tzinfo=UTC)).records)
        wait_caught_up(kafka_bootstrap, group, kafka_topic)
    assert first.totals.applied == 30
    assert resumed.totals.consumed == 5  # without the flag: from the committed offsets
    assert keyspace.execute("SELECT count(*) FROM klines_by_bucket").one()[0] == 35


def test_a_regex_subscription_picks_up_a_topic_created_after_start(kafka_bootstrap, keyspace):
    """Debezium creates a table's topic with its first change, possibly long after the consumer started."""
    prefix = unique_name("late")
    first, later = f"{prefix}.public.ticker_24h", f"{prefix}.public.klines"
    group = unique_name("g")
    create_topic(kafka_bootstrap, first, 1)
    consumer = build_consumer(kafka_bootstrap, keyspace, rf"^{prefix}\.public\..*$", group)
    try:
        with running(consumer):
            wait_until(lambda: consumer.progress, timeout=60, what="the first topic's assignment")
            create_topic(kafka_bootstrap, later, 1)
            produce(kafka_bootstrap, later, kline_stream(10, symbols=2, start=datetime(2038, 1, 1, tzinfo=UTC)).records)
            wait_until(lambda: consumer.totals.applied == 10, timeout=30, what="records of the new topic applied")
    finally:
        delete_topics(kafka_bootstrap, [first, later])
