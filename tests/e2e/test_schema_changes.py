"""PostgreSQL schema changes mid-stream, through real Debezium into Cassandra (issue 14).

Each test runs a private pipeline (database, connector, topics, keyspace, group) and changes the source
table `klines` with DDL while `cdc consume` runs. The oracle is the literal values the test writes.
"""

from __future__ import annotations

import socket
import urllib.request
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import psycopg
import pytest
import yaml

from cdc_consumer.mapping import default_mapping_path
from tests.e2e.pipeline import Pipeline
from tests.integration.consume_support import read_all
from tests.support import wait_until

pytestmark = pytest.mark.e2e
START = datetime(2039, 1, 1, tzinfo=UTC)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def metric(port: int, name: str, labels: str) -> float | None:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith(f"{name}{{{labels}}} "):
            return float(line.split()[-1])
    return None


def insert_kline(dsn: str, minute: int, close, **extra) -> None:
    columns = {"symbol": "EVOUSDT", "interval": "1m", "open_time": START + timedelta(minutes=minute),
               "close_time": START + timedelta(minutes=minute, seconds=59), "close": close,
               "number_of_trades": minute, **extra}
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"INSERT INTO klines ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))})",
                     list(columns.values()))


def ddl(dsn: str, statement: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(statement)


def stored(session, *columns: str) -> dict[int, tuple]:
    """minute -> the named columns of the Cassandra rows of EVOUSDT."""
    rows = session.execute(f"SELECT open_time, {', '.join(columns)} FROM klines_by_bucket")
    return {int((r[0].replace(tzinfo=UTC) - START).total_seconds() // 60): tuple(r[1:]) for r in rows}


def wait_rows(session, minutes, *columns: str, timeout: float = 120) -> dict[int, tuple]:
    return wait_until(lambda: (rows := stored(session, *columns)) and set(minutes) <= set(rows) and rows,
                      timeout=timeout, interval=0.5, what=f"klines rows {sorted(minutes)} in Cassandra")


def test_add_widen_drop_and_retype_columns_mid_stream_without_opt_in(pipeline: Pipeline, cassandra_session,
                                                                     kafka_bootstrap):
    port = free_port()
    pipeline.start_consumer("--metrics-port", str(port))
    insert_kline(pipeline.dsn, 0, Decimal("100.12345678"), open=Decimal("1.5"))
    wait_rows(cassandra_session, [0], "close_exact")

    # ADD COLUMN, no opt-in: the stream keeps flowing, the column is ignored, logged once, counted
    ddl(pipeline.dsn, "ALTER TABLE klines ADD COLUMN note text")
    for minute in (1, 2, 3):
        insert_kline(pipeline.dsn, minute, Decimal("101"), note=f"n{minute}")
    rows = wait_rows(cassandra_session, [1, 2, 3], "close_exact")
    assert rows[3] == (Decimal("101.00000000"),)
    assert pipeline.consumer_logs().count("source column note of public.klines is not in the mapping") == 1
    assert metric(port, "cdc_source_columns_ignored", 'table="public.klines"') == 1.0

    # exact widening: numeric(30,8) -> numeric(38,12), int -> bigint
    ddl(pipeline.dsn, "ALTER TABLE klines ALTER COLUMN close TYPE numeric(38,12), "
                      "ALTER COLUMN number_of_trades TYPE bigint")
    wide = Decimal("12345678901234567890123456.123456789012")  # 38 digits, 12 after the point
    insert_kline(pipeline.dsn, 4, wide)
    rows = wait_rows(cassandra_session, [4], "close_exact", "number_of_trades")
    assert rows[4] == (wide, 4)

    # DROP COLUMN the mapping reads: the column stops being written, nothing stalls
    ddl(pipeline.dsn, "ALTER TABLE klines DROP COLUMN open")
    insert_kline(pipeline.dsn, 5, Decimal("105"))
    rows = wait_rows(cassandra_session, [5], "close_exact", "open_exact")
    assert rows[5] == (Decimal("105.000000000000"), None)
    assert rows[0] == (Decimal("100.12345678"), Decimal("1.50000000"))  # written before the drop, kept

    # numeric -> text: a value the decimal column cannot hold goes to the DLQ; the rest continues
    ddl(pipeline.dsn, "ALTER TABLE klines ALTER COLUMN close TYPE text")
    insert_kline(pipeline.dsn, 6, "n/a")
    insert_kline(pipeline.dsn, 7, "107.5")  # numeric text still converts exactly (string-mode decimals)
    rows = wait_rows(cassandra_session, [7], "close_exact")
    assert rows[7] == (Decimal("107.5"),) and 6 not in stored(cassandra_session, "close_exact")
    dlq = f"{pipeline.topic('klines')}.dlq"
    parked = wait_until(lambda: read_all(kafka_bootstrap, dlq), timeout=60, what="the DLQ record")
    assert len(parked) == 1
    headers = {k: v.decode() for k, v in parked[0].headers()}
    assert headers["cdc.error.type"] == "UnmappableRecord" and headers["cdc.error.edge"] == "mapping"
    assert "klines_by_bucket.close" in headers["cdc.error"] and "n/a" in headers["cdc.error"]
    assert all(p.poll() is None for p in pipeline.consumers), "the consumer stopped"


def test_add_columns_opt_in_adds_the_cassandra_columns_and_a_restart_with_an_edited_mapping_loses_nothing(
        pipeline: Pipeline, cassandra_session, tmp_path):
    document = yaml.safe_load(default_mapping_path().read_text())
    document["tables"]["public.klines"]["targets"][0]["schema_evolution"] = "add_columns"
    evolving = tmp_path / "evolving.yaml"
    evolving.write_text(yaml.safe_dump(document, sort_keys=False))
    pipeline.start_consumer("--mapping", str(evolving))
    insert_kline(pipeline.dsn, 0, Decimal("1"))
    wait_rows(cassandra_session, [0], "close_exact")

    ddl(pipeline.dsn, "ALTER TABLE klines ADD COLUMN vwap numeric(30,8), ADD COLUMN venue text")
    insert_kline(pipeline.dsn, 1, Decimal("2"), vwap=Decimal("1.23456789"), venue="X")
    insert_kline(pipeline.dsn, 2, Decimal("3"), vwap=Decimal("99999999999999999999.99999999"), venue="Y")
    rows = wait_rows(cassandra_session, [1, 2], "vwap", "vwap_exact", "venue", timeout=180)
    assert rows[1] == (1.23456789, Decimal("1.23456789"), "X")
    assert rows[2] == (float(Decimal("99999999999999999999.99999999")), Decimal("99999999999999999999.99999999"), "Y")
    types = {r.column_name: r.type for r in cassandra_session.execute(
        "SELECT column_name, type FROM system_schema.columns WHERE keyspace_name = %s AND table_name = 'klines_by_bucket'",
        [cassandra_session.keyspace])}
    assert (types["vwap"], types["vwap_exact"], types["venue"]) == ("double", "decimal", "text")

    # stop, write while stopped, restart with an edited mapping (the columns now named explicitly)
    assert list(pipeline.stop_consumers().values()) == [0]
    insert_kline(pipeline.dsn, 3, Decimal("4"), vwap=Decimal("3.5"), venue="Z")
    columns = document["tables"]["public.klines"]["targets"][0]["columns"]
    columns.update({"vwap": {"from": "vwap", "convert": "double"}, "vwap_exact": {"from": "vwap", "convert": "decimal"},
                    "venue": "venue"})
    del document["tables"]["public.klines"]["targets"][0]["schema_evolution"]
    edited = tmp_path / "edited.yaml"
    edited.write_text(yaml.safe_dump(document, sort_keys=False))
    pipeline.start_consumer("--mapping", str(edited))
    insert_kline(pipeline.dsn, 4, Decimal("5"), vwap=Decimal("4.5"), venue="W")
    rows = wait_rows(cassandra_session, [0, 1, 2, 3, 4], "vwap_exact", "venue")
    assert [rows[m] for m in range(5)] == [(None, None), (Decimal("1.23456789"), "X"),
                                           (Decimal("99999999999999999999.99999999"), "Y"),
                                           (Decimal("3.50000000"), "Z"), (Decimal("4.50000000"), "W")]
    assert pipeline.verify()["identical"] is True
