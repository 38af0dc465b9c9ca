"""`cdc consume` on the real Debezium fixture records: Kafka -> Cassandra rows equal to the source rows."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import orjson
import pytest

from bench.envelopes import fixture_records, ticker_stream
from cdc_consumer import schema
from tests.integration.consume_support import (
    FIXTURE_ONLY_TABLES,
    TOAST_MAPPING,
    TOAST_TABLE,
    assert_row_matches,
    build_consumer,
    cdc_consume,
    create_topic,
    epoch_us,
    latest_by_symbol,
    plain_event,
    produce,
    read_all,
    running,
    source_state,
    wait_caught_up,
    write_mapping,
)
from tests.support import unique_name

pytestmark = pytest.mark.integration



@pytest.fixture(scope="module")
def keyspace(cassandra_cluster):
    """A fresh keyspace with cql/schema.cql and the test-only toast_demo table."""
    name = unique_name("t")
    session = cassandra_cluster.connect()
    schema.apply_cql(session, name)
    session.execute(TOAST_TABLE)
    yield session
    session.execute(f"DROP KEYSPACE IF EXISTS {name}")
    session.shutdown()


@pytest.fixture(scope="module")
def fixture_run(kafka_bootstrap, keyspace, tmp_path_factory):
    """All 35 captured records produced to one 3-partition topic and consumed once until caught up."""
    topic, group = unique_name("fx"), unique_name("g")
    create_topic(kafka_bootstrap, topic, 3)
    records = fixture_records()
    produce(kafka_bootstrap, topic, [(r.key, r.value, r.headers) for r in records])
    mapping = write_mapping(tmp_path_factory.mktemp("mapping"), extra_tables=TOAST_MAPPING,
                            skip=FIXTURE_ONLY_TABLES)
    consumer = build_consumer(kafka_bootstrap, keyspace, topic, group, mapping)
    with running(consumer):
        wait_caught_up(kafka_bootstrap, group, topic)
    yield {"topic": topic, "mapping": mapping, "consumer": consumer,
           "records": [(r.source_topic, r.key, r.value) for r in records]}


def dump(session, table: str, value_column: str) -> list:
    """A table's rows with the write time of one regular column (what a replay must not change)."""
    rows = sorted((tuple(row) for row in session.execute(f"SELECT * FROM {table}")), key=repr)
    write_times = sorted((r[0] for r in session.execute(f"SELECT WRITETIME({value_column}) FROM {table}")), key=repr)
    return [*rows, write_times]


def test_the_oracle_reads_each_decimal_digit_for_digit_as_debezium_string_mode_prints_it():
    """The oracle's plain base64 reading, line by line against the same events captured with
    decimal.handling.mode=string (Debezium's own text of each numeric, scale included)."""
    compared = 0
    for precise, text in zip(fixture_records(), fixture_records("pg_decimal_string.ndjson"), strict=False):
        event = plain_event(precise.key, precise.value)
        if event is None or event.after is None:
            continue
        printed = json.loads(text.value)["payload"]["after"]
        for column, value in event.after.items():
            if isinstance(value, Decimal):
                assert value.as_tuple() == Decimal(printed[column]).as_tuple(), (column, value, printed[column])
                compared += 1
    assert compared >= 60, compared


def test_every_record_is_accounted_for(fixture_run):
    totals = fixture_run["consumer"].totals
    assert totals.consumed == 35
    # 4 tombstones, 1 truncate (ignored by default), 12 events of the fixture-only tables
    assert totals.skipped == 4 + 1 + 12
    assert totals.dlq == 0
    assert totals.applied == 35 - 17


def test_ticker_history_equals_the_source_rows_exactly(fixture_run, keyspace):
    expected = source_state(fixture_run["records"])["public.ticker_24h"]
    rows = {(r.symbol, r.event_time_us): r for r in keyspace.execute("SELECT * FROM ticker_by_day")}
    assert sorted(rows) == sorted((symbol, epoch_us(event_time)) for symbol, event_time in expected)
    for (symbol, event_time), source_row in expected.items():
        assert_row_matches(rows[(symbol, epoch_us(event_time))], source_row, derived={"day": event_time.date()})


def test_decimals_keep_every_digit_next_to_their_chart_doubles(fixture_run, keyspace):
    row = keyspace.execute("SELECT * FROM latest_prices WHERE symbol = 'BNBUSDT'").one()
    exact = {"quote_volume": "9999999999999999999999.99999999", "price_change": "-0.00000001", "last_price": "0E-8",
             "volume": "12345678901234.12345678", "high_price": "999999999999.99999999", "low_price": "1E-8"}
    for column, text in exact.items():
        stored = getattr(row, f"{column}_exact")
        assert stored.as_tuple() == Decimal(text).as_tuple(), column  # same digits and scale
        assert getattr(row, column) == float(Decimal(text)), column


def test_a_delete_removes_the_row_and_a_primary_key_change_moves_it(fixture_run, keyspace):
    symbols = {r.symbol for r in keyspace.execute("SELECT symbol FROM ticker_by_day")}
    assert "BNBUSDT" not in symbols  # created, then deleted
    assert "ETHUSDT" not in symbols and "ETHBUSD" in symbols  # UPDATE of the key: delete + create
    klines = {(r.symbol, r.interval) for r in keyspace.execute("SELECT symbol, interval FROM klines_by_bucket")}
    assert ("BTCUSDT", "1h") not in klines and ("BTCUSDT", "1m") in klines


def test_an_unchanged_toast_column_keeps_its_value(fixture_run, keyspace):
    row = keyspace.execute("SELECT payload, note FROM toast_demo WHERE id = 1").one()
    assert row.note == "second"  # the update was applied...
    assert row.payload == "0123456789abcdef" * 160  # ...without overwriting the unavailable payload


def test_klines_land_in_their_day_bucket_with_exact_values(fixture_run, keyspace):
    expected = source_state(fixture_run["records"])["public.klines"]
    rows = list(keyspace.execute("SELECT * FROM klines_by_bucket"))
    assert len(rows) == len(expected) == 4
    for row in rows:
        source_row = next(r for (s, i, _), r in expected.items() if (s, i) == (row.symbol, row.interval)
                          and r["open_time"].replace(tzinfo=None) == row.open_time)
        assert_row_matches(row, source_row, derived={"bucket": source_row["open_time"].date()})


def test_latest_prices_hold_the_newest_committed_row_per_symbol(fixture_run, keyspace):
    expected = latest_by_symbol(fixture_run["records"])
    rows = {r.symbol: r for r in keyspace.execute("SELECT * FROM latest_prices")}
    assert set(rows) == set(expected)  # deletes of history rows keep the latest price
    for symbol, source_row in expected.items():
        assert_row_matches(rows[symbol], source_row)
    assert str(rows["BTCUSDT"].last_price_exact) == "43999.99000000"  # the update, not the snapshot row


def test_writes_carry_the_source_commit_time(fixture_run, keyspace):
    update = next(orjson.loads(value) for topic, _, value in fixture_run["records"]
                  if value and b'"op":"u"' in value and topic.endswith("ticker_24h"))
    row = keyspace.execute("SELECT WRITETIME(last_price_exact) AS wt FROM latest_prices "
                           "WHERE symbol = 'BTCUSDT'").one()
    assert row.wt == update["payload"]["source"]["ts_us"]


def test_replaying_the_topic_from_the_beginning_changes_nothing(fixture_run, keyspace, kafka_bootstrap):
    tables = {"ticker_by_day": "last_price_exact", "latest_prices": "last_price", "klines_by_bucket": "close",
              "toast_demo": "note"}
    before = {table: dump(keyspace, table, column) for table, column in tables.items()}
    group = unique_name("replay")
    consumer = build_consumer(kafka_bootstrap, keyspace, fixture_run["topic"], group, fixture_run["mapping"])
    with running(consumer):
        wait_caught_up(kafka_bootstrap, group, fixture_run["topic"])
    assert consumer.totals.applied == 18
    assert {table: dump(keyspace, table, column) for table, column in tables.items()} == before


def test_poison_records_go_to_the_dlq_with_their_origin_and_the_rest_is_applied(kafka_bootstrap, keyspace):
    topic, group = unique_name("poison"), unique_name("g")
    create_topic(kafka_bootstrap, topic, 1)
    good = ticker_stream(6, symbols=3, start=datetime_2030())
    bnb = next(r for r in fixture_records() if r.value and b'"symbol":"BNBUSDT"' in r.value)
    bad_base64 = bnb.value.replace(b'"last_price":"AA=="', b'"last_price":"!!not base64!!"')
    assert bad_base64 != bnb.value
    type_zoo = next(r for r in fixture_records() if r.source_topic.endswith("type_zoo"))
    poison = {
        1: (b'{"id":1}', b'{"schema": {"type": "struct", "fields": [', [("trace", b"abc")]),  # truncated JSON
        3: (bnb.key, bad_base64, list(bnb.headers)),  # a Decimal that is not base64
        5: (type_zoo.key, type_zoo.value, []),  # a table without mapping
        7: (None, b"\x00\x00\x00\x03\xe7\x02AB", []),  # Avro wire bytes (schema id 999) where JSON is expected
    }
    stream = list(good.records)
    for offset in sorted(poison):
        stream.insert(offset, poison[offset])
    produce(kafka_bootstrap, topic, stream, partition=0)
    consumer = build_consumer(kafka_bootstrap, keyspace, topic, group)
    with running(consumer):
        wait_caught_up(kafka_bootstrap, group, topic)

    parked = read_all(kafka_bootstrap, f"{topic}.dlq")
    headers = [dict(m.headers()) for m in parked]
    assert [int(h["cdc.original.offset"]) for h in headers] == sorted(poison)
    for message, header in zip(parked, headers):
        offset = int(header["cdc.original.offset"])
        key, value, original_headers = poison[offset]
        assert (message.key(), message.value()) == (key, value)  # parked byte for byte
        assert header["cdc.original.topic"] == topic.encode() and header["cdc.original.partition"] == b"0"
        assert all(header[name] == raw for name, raw in original_headers)
        assert header["cdc.error"]
    types = [h["cdc.error.type"] for h in headers]
    assert types == [b"InvalidJson", b"InvalidValue", b"UnmappableRecord", b"InvalidJson"]
    assert b"no mapping for source table 'public.type_zoo'" in headers[2]["cdc.error"]
    applied = {r.symbol for r in keyspace.execute("SELECT symbol FROM ticker_by_day WHERE symbol IN "
                                                  "('SYM0000', 'SYM0001', 'SYM0002') AND day = '2030-01-01'")}
    assert applied == {"SYM0000", "SYM0001", "SYM0002"}
    assert consumer.totals.dlq == 4 and consumer.totals.applied == 6


def datetime_2030():
    return datetime(2030, 1, 1, tzinfo=UTC)



def test_a_mapping_that_does_not_fit_the_cassandra_tables_exits_2_before_consuming(keyspace, tmp_path):
    mapping = write_mapping(tmp_path, extra_tables={"public.toast_demo": {"targets": [
        {"table": "toast_demo", "columns": {"id": "id", "payload": {"from": "payload", "convert": "decimal"},
                                            "colour": "colour"}}]}})
    process = cdc_consume("--mapping", str(mapping), "--cassandra-keyspace", keyspace.keyspace,
                          "--topics", unique_name("never"))
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 2, output
    assert "conversion 'decimal' cannot feed payload of type text" in output
    assert "column 'colour' is not in Cassandra table toast_demo" in output


def test_an_uninitialised_keyspace_exits_2_naming_cdc_init(cassandra_session):
    process = cdc_consume("--cassandra-keyspace", cassandra_session.keyspace, "--topics", unique_name("never"))
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 2, output
    assert "has no tables (run `cdc init`)" in output
