"""Failure classification of `cdc consume` on the real Kafka and Cassandra (issue 14).

- permanent for one record: a row Cassandra rejects (a partition key over its 64 KiB limit) among
  10,000 good ones goes to the DLQ alone, with headers naming the edge and the error; nothing pauses;
  a value the column type cannot hold fails while binding and is parked the same way;
- permanent for the process: a mapped Cassandra column dropped while `cdc consume` runs -> exit 1 with
  a message naming the column, nothing committed past unapplied records;
- transient: Cassandra unreachable -> pause with reason cassandra_unavailable (metric, WARNING, state
  file; `cdc status --json` names the paused consumer and its reason and exits 1), nothing committed, then
  converges (status healthy again); a schema registry answering 5xx -> pause
  with reason registry_unavailable, nothing parked, then converges.
"""

from __future__ import annotations

import base64
import logging
import os
import threading
from datetime import UTC, datetime

import orjson
import pytest
from cassandra.cluster import Cluster
from cassandra.policies import ConstantReconnectionPolicy
from click.testing import CliRunner
from confluent_kafka.admin import AdminClient

from bench.envelopes import fixture_records, kline_stream, ticker_stream
from cdc_cli.cli import main
from cdc_consumer import schema
from cdc_consumer.avro import AvroDecoder
from cdc_consumer.decoder import Decoder
from cdc_consumer.pause_state import PauseStateFile, read_states
from cdc_consumer.sink import CassandraSink
from tests.integration.consume_support import (
    FIXTURE_ONLY_TABLES,
    TOAST_MAPPING,
    TOAST_TABLE,
    build_consumer,
    cdc_consume,
    committed_offsets,
    create_topic,
    high_watermarks,
    produce,
    read_all,
    running,
    wait_caught_up,
    write_mapping,
)
from tests.integration.tcp_proxy import TcpProxy
from tests.support import unique_name, wait_until
from tests.unit.test_avro_registry import Registry

pytestmark = pytest.mark.integration
PARTITIONS = 3
OVERSIZED_SYMBOL = "X" * 70_000  # Cassandra refuses partition key components over 65,535 bytes


@pytest.fixture()
def keyspace(cassandra_session):
    schema.apply_cql(cassandra_session, cassandra_session.keyspace)
    return cassandra_session


def with_symbol(record: tuple[bytes, bytes], symbol: str) -> tuple[bytes, bytes]:
    key, value = (orjson.loads(part) for part in record)
    key["payload"]["symbol"] = symbol
    value["payload"]["after"]["symbol"] = symbol
    return orjson.dumps(key), orjson.dumps(value)


def headers_of(message) -> dict[str, str]:
    return {k: v.decode() for k, v in message.headers() or ()}


def dlq_messages(bootstrap: str, topic: str) -> list:
    """The DLQ of `topic`, empty when the consumer never had to create it."""
    if f"{topic}.dlq" not in AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics:
        return []
    return read_all(bootstrap, f"{topic}.dlq")


def cdc_status(group: str, state_dir) -> tuple[int, dict]:
    """`cdc status --json` of the consumer part only, reading pause-state files under `state_dir`."""
    result = CliRunner().invoke(main, ["status", "--json", "--group", group, *(
        f"--skip={part}" for part in ("connector", "slot", "cassandra", "cluster"))],
        env={"CDC_STATE_DIR": str(state_dir)})
    return result.exit_code, orjson.loads(result.stdout)


def paused_gauge(consumer, reason: str) -> float:
    return consumer.metrics.registry.get_sample_value("cdc_consumer_paused", {"reason": reason})


def test_one_record_cassandra_rejects_among_10000_goes_to_the_dlq_alone_without_a_pause(
        kafka_bootstrap, kafka_topic, keyspace, caplog):
    stream = ticker_stream(10_000, symbols=40, start=datetime(2035, 1, 1, tzinfo=UTC))
    bad = with_symbol(stream.records[5000], OVERSIZED_SYMBOL)
    records = [*stream.records[:5000], bad, *stream.records[5000:]]
    create_topic(kafka_bootstrap, kafka_topic, 1)
    produce(kafka_bootstrap, kafka_topic, records, partition=0)
    group = unique_name("g")
    consumer = build_consumer(kafka_bootstrap, keyspace, kafka_topic, group, progress_every=2.0)
    caplog.set_level(logging.INFO, logger="cdc_consumer")
    with running(consumer):
        wait_caught_up(kafka_bootstrap, group, kafka_topic, timeout=180)

    parked = dlq_messages(kafka_bootstrap, kafka_topic)
    assert len(parked) == 1
    headers = headers_of(parked[0])
    assert headers["cdc.error.edge"] == "cassandra"
    # The driver refuses the 70,000-byte component of ticker_by_day's composite routing key before sending
    # (struct.error while binding); Cassandra itself refuses latest_prices' key (InvalidRequest).
    assert (headers["cdc.error.class"], headers["cdc.error.reason"]) in {("struct.error", "invalid_value"),
                                                                        ("InvalidRequest", "invalid_request")}
    assert "65535" in headers["cdc.error"]
    assert headers["cdc.original.offset"] == "5000" and headers["cdc.original.topic"] == kafka_topic
    assert headers["cdc.dlq.attempt"] == "1"
    assert (parked[0].key(), parked[0].value()) == bad  # byte for byte
    assert keyspace.execute("SELECT count(*) FROM ticker_by_day").one()[0] == 10_000
    assert keyspace.execute("SELECT count(*) FROM latest_prices").one()[0] == 40
    assert consumer.totals.dlq == 1 and consumer.totals.applied == 10_000
    assert not [r for r in caplog.records if r.getMessage().startswith("paused")]
    assert paused_gauge(consumer, "cassandra_unavailable") == 0


def test_a_value_its_column_cannot_hold_fails_while_binding_and_only_that_record_is_parked(
        kafka_bootstrap, kafka_topic, keyspace):
    """Binding happens in the driver before a request exists; the record whose value cannot be serialised
    for its column (here a text where the double `last_price` goes) is isolated, the others applied."""
    stream = ticker_stream(60, symbols=3, start=datetime(2035, 6, 1, tzinfo=UTC))
    consumer = build_consumer(kafka_bootstrap, keyspace, kafka_topic, unique_name("g"))
    decoder = Decoder()
    sink = CassandraSink(keyspace)
    bad_token = None
    for index, (key, value) in enumerate(stream.records):
        writes = consumer.mapping.writes(decoder.decode("cdc.public.ticker_24h", key, value))
        if index == 30:
            target = writes[0].target
            position = [c.column for c in target.columns].index("last_price")
            writes[0].values[position] = "not a double"
            bad_token = index
        sink.add(index, writes)
    sink.flush()
    released: list = []
    rejected: list = []
    wait_until(lambda: (released.extend(sink.poll(0.1)), rejected.extend(sink.rejected()))
               and len(released) + len(rejected) == 60, timeout=60, what="every record to be settled")
    assert [token for token, _ in rejected] == [bad_token]
    assert rejected[0][1].edge == "cassandra" and rejected[0][1].reason == "invalid_value"
    assert sorted(released) == [i for i in range(60) if i != bad_token]
    assert keyspace.execute("SELECT count(*) FROM ticker_by_day").one()[0] == 59


def test_a_mapped_column_dropped_while_consuming_exits_1_naming_it_and_commits_nothing_unapplied(
        kafka_bootstrap, kafka_topic, keyspace):
    stream = kline_stream(400, symbols=10, start=datetime(2036, 1, 1, tzinfo=UTC))
    create_topic(kafka_bootstrap, kafka_topic, 1)
    group = unique_name("g")
    produce(kafka_bootstrap, kafka_topic, stream.records[:200], partition=0)
    process = cdc_consume("--topics", kafka_topic, "--group", group, "--cassandra-keyspace", keyspace.keyspace,
                          "--progress-every", "0")
    try:
        wait_caught_up(kafka_bootstrap, group, kafka_topic, timeout=120)
        keyspace.execute("ALTER TABLE klines_by_bucket DROP number_of_trades")
        produce(kafka_bootstrap, kafka_topic, stream.records[200:], partition=0)
        output, _ = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 1, output
    last_line = output.strip().splitlines()[-1]
    assert last_line.startswith("Error: cassandra: the live Cassandra schema no longer fits the mapping"), output
    assert "number_of_trades" in last_line
    assert "Traceback" not in output
    committed = committed_offsets(kafka_bootstrap, group, kafka_topic)[0]
    assert 200 <= committed < 400  # the records written before the drop, never the ones after it
    assert dlq_messages(kafka_bootstrap, kafka_topic) == []


def test_cassandra_down_pauses_with_reason_metric_warning_and_state_then_converges(
        kafka_bootstrap, kafka_topic, keyspace, caplog, tmp_path):
    stream = kline_stream(600, symbols=10, start=datetime(2037, 1, 1, tzinfo=UTC))
    create_topic(kafka_bootstrap, kafka_topic, PARTITIONS)
    group = unique_name("g")
    proxy = TcpProxy(("127.0.0.1", keyspace.cluster.port)).start()
    cluster = Cluster(["127.0.0.1"], port=proxy.port, protocol_version=4,
                      reconnection_policy=ConstantReconnectionPolicy(0.5))
    session = cluster.connect(keyspace.keyspace)
    consumer = build_consumer(kafka_bootstrap, session, kafka_topic, group, retry_max=1.0,
                              pause_warning_every=0.5)
    states_dir = tmp_path / "consumers"  # where `cdc status` looks with CDC_STATE_DIR=tmp_path
    consumer.pause_file = PauseStateFile(group, states_dir)
    caplog.set_level(logging.INFO, logger="cdc_consumer")
    try:
        with running(consumer):
            produce(kafka_bootstrap, kafka_topic, stream.records[:300])
            wait_caught_up(kafka_bootstrap, group, kafka_topic)
            before = committed_offsets(kafka_bootstrap, group, kafka_topic)

            proxy.cut()
            produce(kafka_bootstrap, kafka_topic, stream.records[300:])
            wait_until(lambda: paused_gauge(consumer, "cassandra_unavailable") == 1, timeout=60,
                       what="cdc_consumer_paused{reason=cassandra_unavailable} = 1")
            states = wait_until(lambda: read_states(group, states_dir), timeout=10, what="the pause-state file")
            assert [p.reason for p in states[0].pauses] == ["cassandra_unavailable"]
            code, report = cdc_status(group, tmp_path)
            assert code == 1, report  # a paused consumer is a problem
            assert [(p["reason"], p["pid"]) for p in report["consumer"]["pauses"]] == [
                ("cassandra_unavailable", os.getpid())]
            assert report["healthy"] is False and len(report["problems"]) == 1
            assert report["problems"][0].startswith(
                f"consumer {os.getpid()} of group {group} paused (cassandra_unavailable) since "), report
            wait_until(lambda: sum("PAUSED for" in r.getMessage() and r.levelno == logging.WARNING
                                   for r in caplog.records) >= 2, timeout=30, what="repeated PAUSED warnings")
            assert committed_offsets(kafka_bootstrap, group, kafka_topic) == before
            assert dlq_messages(kafka_bootstrap, kafka_topic) == []

            proxy.start()
            wait_caught_up(kafka_bootstrap, group, kafka_topic, timeout=120)
            wait_until(lambda: paused_gauge(consumer, "cassandra_unavailable") == 0, timeout=30,
                       what="the pause to clear")
            wait_until(lambda: not read_states(group, states_dir)[0].pauses, timeout=30,
                       what="the state file to show no pause")
            code, report = cdc_status(group, tmp_path)
            assert (code, report["consumer"]["pauses"], report["problems"]) == (0, [], []), report
    finally:
        proxy.cut()
        cluster.shutdown()
    assert committed_offsets(kafka_bootstrap, group, kafka_topic) == high_watermarks(kafka_bootstrap, kafka_topic)
    assert keyspace.execute("SELECT count(*) FROM klines_by_bucket").one()[0] == 600
    assert consumer.totals.dlq == 0
    assert not read_states(group, states_dir)  # removed when the consumer stopped



def test_a_registry_outage_pauses_without_parking_anything_and_converges_when_it_answers(
        kafka_bootstrap, kafka_topic, keyspace, tmp_path):
    """Registry 5xx is transient: the record waiting for its schema is rewound, not parked; the consumer
    pauses with reason registry_unavailable and applies everything once the registry answers."""
    keyspace.execute(TOAST_TABLE)
    records = [(r.key and base64.b64decode(r.key), r.value and base64.b64decode(r.value))
               for r in fixture_records("pg_avro_confluent.ndjson")]
    create_topic(kafka_bootstrap, kafka_topic, 1)
    produce(kafka_bootstrap, kafka_topic, records, partition=0)
    registry = Registry()
    registry.fail_next = 10**9  # down: every request answers 500
    server = threading.Thread(target=registry.server.serve_forever, daemon=True)
    server.start()
    group = unique_name("g")
    mapping = write_mapping(tmp_path, extra_tables=TOAST_MAPPING, skip=FIXTURE_ONLY_TABLES)
    consumer = build_consumer(kafka_bootstrap, keyspace, kafka_topic, group, mapping,
                              decode=AvroDecoder(registry.url).decode_record, retry_initial=0.2, retry_max=1.0)
    try:
        with running(consumer):
            wait_until(lambda: paused_gauge(consumer, "registry_unavailable") == 1, timeout=60,
                       what="cdc_consumer_paused{reason=registry_unavailable} = 1")
            wait_until(lambda: len(registry.requests) >= 3, timeout=60, what="several retries of the registry")
            assert committed_offsets(kafka_bootstrap, group, kafka_topic)[0] < 0  # nothing committed
            assert consumer.totals.dlq == 0
            registry.fail_next = 0  # the registry answers again
            wait_caught_up(kafka_bootstrap, group, kafka_topic, timeout=120)
            wait_until(lambda: paused_gauge(consumer, "registry_unavailable") == 0, timeout=30,
                       what="the pause to clear")
    finally:
        registry.server.shutdown()
        registry.server.server_close()
    assert consumer.totals.dlq == 0 and dlq_messages(kafka_bootstrap, kafka_topic) == []
    assert consumer.totals.applied == 18  # as with the schemas file (test_consume_avro), none lost


def test_a_dlq_topic_that_cannot_be_written_stops_cdc_consume_with_exit_1_and_commits_nothing_past_it(
        kafka_bootstrap, kafka_topic, keyspace):
    stream = ticker_stream(20, symbols=2, start=datetime(2040, 1, 1, tzinfo=UTC))
    records = [*stream.records[:10], (b"{}", b"not json"), *stream.records[10:]]
    create_topic(kafka_bootstrap, kafka_topic, 1)
    produce(kafka_bootstrap, kafka_topic, records, partition=0)
    group = unique_name("g")
    process = cdc_consume("--topics", kafka_topic, "--group", group, "--cassandra-keyspace", keyspace.keyspace,
                          "--dlq-topic", "no/such topic/{topic}", "--progress-every", "0")
    try:
        output, _ = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 1, output
    last_line = output.strip().splitlines()[-1]
    assert last_line.startswith(f"Error: kafka: DLQ topic no/such topic/{kafka_topic} not writable"), output
    assert "Traceback" not in output
    assert committed_offsets(kafka_bootstrap, group, kafka_topic)[0] <= 10  # never past the unparked record
