"""`cdc verify` against real PostgreSQL and Cassandra: identical data passes, each kind of drift is named."""

from __future__ import annotations

import json
from decimal import Decimal

import psycopg
import pytest
from click.testing import CliRunner

from cdc_consumer import schema
from cdc_consumer.cli import main
from cdc_consumer.mapping import compile_mapping, describe_tables, load_mapping

pytestmark = pytest.mark.integration

KLINES = [
    ("BTCUSDT", "1m", "2026-11-20 10:00:00+00", Decimal("91234.12345678"), Decimal("123456789012.12345678")),
    ("BTCUSDT", "1m", "2026-11-20 10:01:00+00", Decimal("-0.00000001"), Decimal(0)),
    ("BTCUSDT", "1m", "2026-11-21 00:00:00+00", Decimal("99999999999999999999.99999999"), Decimal(1)),
    ("ETHUSDT", "1h", "2026-11-20 10:00:00+00", Decimal("3000.5"), Decimal(2)),
]


@pytest.fixture()
def replicated(pg_database, cassandra_session):
    """Source rows in PostgreSQL and the same rows written to Cassandra through the mapping."""
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
        rows = {t: conn.execute(f"SELECT * FROM {t}").fetchall() for t in ("klines", "ticker_24h")}
        names = {t: [c.name for c in conn.execute(f"SELECT * FROM {t} LIMIT 0").description] for t in rows}
    mapping = compile_mapping(load_mapping(), describe_tables(cassandra_session, keyspace),
                              prepare=cassandra_session.prepare, keyspace=keyspace)
    for table, table_rows in rows.items():
        for values in table_rows:
            for writer in mapping.tables[f"public.{table}"].targets:
                write = writer.upsert(dict(zip(names[table], values)), create=True, timestamp=1, order=())
                cassandra_session.execute(writer.insert, [*write.values, write.timestamp])
    return pg_database, keyspace, cassandra_session


def run_verify(dsn: str, keyspace: str, *args: str):
    result = CliRunner().invoke(main, ["verify", "--json", "--pg-dsn", dsn, "--cassandra-keyspace", keyspace,
                                       *args])
    report = json.loads(result.output) if result.output.startswith("{") else None
    return result, report


def by_target(report) -> dict:
    return {t["target"]: t for t in report["tables"]}


def test_identical_data_verifies_clean(replicated):
    dsn, keyspace, _ = replicated
    result, report = run_verify(dsn, keyspace)
    assert result.exit_code == 0, result.output
    tables = by_target(report)
    assert tables["klines_by_bucket"]["matched"] == len(KLINES)
    assert tables["ticker_by_day"]["matched"] == 2
    assert tables["latest_prices"]["matched"] == 1  # the newest ticker row per symbol


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
