"""`cdc verify` against real PostgreSQL and Cassandra: identical data passes, each kind of drift is named."""

from __future__ import annotations

import json
from decimal import Decimal

import psycopg
import pytest
from click.testing import CliRunner

from cdc_cli.cli import main
from cdc_consumer import schema
from cdc_consumer.mapping import writer as mapping_writer
from tests.oracle import assert_replicated, compare

pytestmark = pytest.mark.integration

KLINES = [
    ("BTCUSDT", "1m", "2026-11-20 10:00:00+00", Decimal("91234.12345678"), Decimal("123456789012.12345678")),
    ("BTCUSDT", "1m", "2026-11-20 10:01:00+00", Decimal("-0.00000001"), Decimal(0)),
    ("BTCUSDT", "1m", "2026-11-21 00:00:00+00", Decimal("99999999999999999999.99999999"), Decimal(1)),
    ("ETHUSDT", "1h", "2026-11-20 10:00:00+00", Decimal("3000.5"), Decimal(2)),
]


# What the sink must have written for the rows above, as literal CQL (nothing from the write path): bucket
# = UTC day for 1m and first of the UTC month for 1h, timestamps in ms, *_us in exact µs (`date -u +%s`),
# doubles parsed by Cassandra from the decimal literal, decimals at the numeric(30,8)/(38,8) scale.
REPLICATED = (
    "INSERT INTO klines_by_bucket (symbol, interval, bucket, open_time, open_time_us, close, close_exact, volume, "
    "volume_exact) VALUES ('BTCUSDT', '1m', '2026-11-20', '2026-11-20 10:00:00+0000', 1795168800000000, "
    "91234.12345678, 91234.12345678, 123456789012.12345678, 123456789012.12345678)",
    "INSERT INTO klines_by_bucket (symbol, interval, bucket, open_time, open_time_us, close, close_exact, volume, "
    "volume_exact) VALUES ('BTCUSDT', '1m', '2026-11-20', '2026-11-20 10:01:00+0000', 1795168860000000, "
    "-0.00000001, -0.00000001, 0.0, 0.00000000)",
    "INSERT INTO klines_by_bucket (symbol, interval, bucket, open_time, open_time_us, close, close_exact, volume, "
    "volume_exact) VALUES ('BTCUSDT', '1m', '2026-11-21', '2026-11-21 00:00:00+0000', 1795219200000000, "
    "99999999999999999999.99999999, 99999999999999999999.99999999, 1.0, 1.00000000)",
    "INSERT INTO klines_by_bucket (symbol, interval, bucket, open_time, open_time_us, close, close_exact, volume, "
    "volume_exact) VALUES ('ETHUSDT', '1h', '2026-11-01', '2026-11-20 10:00:00+0000', 1795168800000000, "
    "3000.5, 3000.50000000, 2.0, 2.00000000)",
    "INSERT INTO ticker_by_day (symbol, day, event_time, event_time_us, last_price, last_price_exact) VALUES "
    "('BTCUSDT', '2026-11-20', '2026-11-20 10:00:00.123+0000', 1795168800123456, 91000.5, 91000.50000000)",
    "INSERT INTO ticker_by_day (symbol, day, event_time, event_time_us, last_price, last_price_exact) VALUES "
    "('BTCUSDT', '2026-11-20', '2026-11-20 10:00:10+0000', 1795168810000000, 91001.25, 91001.25000000)",
    "INSERT INTO latest_prices (symbol, event_time, event_time_us, last_price, last_price_exact) VALUES "
    "('BTCUSDT', '2026-11-20 10:00:10+0000', 1795168810000000, 91001.25, 91001.25000000)",
)
TARGETS = ("klines_by_bucket", "ticker_by_day", "latest_prices")


@pytest.fixture()
def replicated(pg_database, cassandra_session):
    """Source rows in PostgreSQL and, seeded independently of the sink, the rows it must write for them."""
    keyspace = cassandra_session.keyspace
    schema.apply_cql(cassandra_session, keyspace)
    with psycopg.connect(pg_database) as conn:
        schema.apply_sql(conn)
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO klines (symbol, interval, open_time, close, volume) "
                            "VALUES (%s, %s, %s, %s, %s)", KLINES)
            cur.execute("INSERT INTO ticker_24h (symbol, event_time, last_price) VALUES "
                        "('BTCUSDT', '2026-11-20 10:00:00.123456+00', 91000.5), "
                        "('BTCUSDT', '2026-11-20 10:00:10+00', 91001.25)")
    for statement in REPLICATED:
        cassandra_session.execute(statement)
    return pg_database, keyspace, cassandra_session


def run_verify(dsn: str, keyspace: str, *args: str):
    result = CliRunner().invoke(main, ["verify", "--json", "--pg-dsn", dsn, "--cassandra-keyspace", keyspace,
                                       *args])
    report = json.loads(result.output) if result.output.startswith("{") else None
    return result, report


def by_target(report) -> dict:
    return {t["target"]: t for t in report["tables"]}


def test_identical_data_verifies_clean(replicated):
    dsn, keyspace, session = replicated
    result, report = run_verify(dsn, keyspace)
    assert result.exit_code == 0, result.output
    tables = by_target(report)
    assert tables["klines_by_bucket"]["matched"] == len(KLINES)
    assert tables["ticker_by_day"]["matched"] == 2
    assert tables["latest_prices"]["matched"] == 1  # the newest ticker row per symbol
    # The independent oracle (tests/oracle.py) agrees with the literal rows, digit for digit.
    assert assert_replicated(dsn, session, keyspace, TARGETS) == {
        "klines_by_bucket": 4, "ticker_by_day": 2, "latest_prices": 1}


def test_verify_computes_expected_rows_without_the_native_writer(replicated, monkeypatch):
    """The checker is not the sink's twin: with the sink's C conversion loop corrupted, verify still judges the
    literal rows identical (verify converts through the pure-Python loop)."""
    def corrupted(writer):
        def upsert(row, null, timestamp, order):
            write = writer.upsert_python(row, null, timestamp, order)
            write.values = [v + Decimal("0.00000001") if isinstance(v, Decimal) else v for v in write.values]
            return write
        return upsert

    monkeypatch.setattr(mapping_writer, "_cql_native", mapping_writer._cql_native or object())
    monkeypatch.setattr(mapping_writer, "native_converter", corrupted)
    dsn, keyspace, _ = replicated
    result, report = run_verify(dsn, keyspace)
    assert result.exit_code == 0, result.output
    assert by_target(report)["klines_by_bucket"]["matched"] == len(KLINES)


def test_missing_extra_and_differing_rows_are_counted_and_exit_1(replicated):
    dsn, keyspace, session = replicated
    session.execute("DELETE FROM klines_by_bucket WHERE symbol = 'ETHUSDT' AND interval = '1h' "
                    "AND bucket = '2026-11-01'")
    session.execute("UPDATE klines_by_bucket SET close_exact = 91234.12345679 WHERE symbol = 'BTCUSDT' "
                    "AND interval = '1m' AND bucket = '2026-11-20' AND open_time = '2026-11-20 10:00:00+0000' "
                    "AND open_time_us = 1795168800000000")
    session.execute("INSERT INTO klines_by_bucket (symbol, interval, bucket, open_time, open_time_us) "
                    "VALUES ('SOLUSDT', '1m', '2026-11-20', '2026-11-20 10:00:00+0000', 1795168800000000)")
    result, report = run_verify(dsn, keyspace, "--table", "public.klines")
    assert result.exit_code == 1
    klines = by_target(report)["klines_by_bucket"]
    assert (klines["missing"], klines["extra"], klines["differing"]) == (1, 1, 1)
    differs = next(s for s in klines["samples"] if s["kind"] == "differs")
    assert differs["columns"]["close_exact"] == {"postgres": "91234.12345678", "cassandra": "91234.12345679"}
    found, _ = compare(dsn, session, keyspace, ("klines_by_bucket",))  # the oracle sees the same three
    assert found[0].endswith("missing 1, extra 1, differing 1"), found
    assert any("'close_exact': ('91234.12345678', '91234.12345679')" in line for line in found), found


def test_a_one_digit_change_in_the_8th_decimal_is_a_difference(replicated):
    dsn, keyspace, _ = replicated
    with psycopg.connect(dsn) as conn:
        conn.execute("UPDATE klines SET volume = volume + 0.00000001 WHERE symbol = 'BTCUSDT' "
                     "AND open_time = '2026-11-21 00:00:00+00'")
    result, report = run_verify(dsn, keyspace, "--table", "klines_by_bucket")
    assert result.exit_code == 1
    assert by_target(report)["klines_by_bucket"]["differing"] == 1


def test_since_limits_the_comparison_to_newer_rows(replicated):
    dsn, keyspace, session = replicated
    session.execute("DELETE FROM klines_by_bucket WHERE symbol = 'ETHUSDT' AND interval = '1h' "
                    "AND bucket = '2026-11-01'")
    result, report = run_verify(dsn, keyspace, "--table", "public.klines", "--since", "2026-11-21T00:00:00Z")
    assert result.exit_code == 0, result.output
    assert by_target(report)["klines_by_bucket"]["matched"] == 1


def test_an_unknown_table_is_a_usage_error(replicated):
    dsn, keyspace, _ = replicated
    result, _ = run_verify(dsn, keyspace, "--table", "public.nope")
    assert result.exit_code == 2
    assert "public.nope" in result.output
