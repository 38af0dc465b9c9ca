"""`cdc init` on the real services: creates everything once, and a second run changes nothing."""

from __future__ import annotations

import psycopg
import pytest
from click.testing import CliRunner

from cdc_cli.cli import main
from tests.support import unique_name

pytestmark = pytest.mark.integration

TABLES = ("ticker_24h", "klines", "order_book", "trades", "cdc_heartbeat", "cdc_signal")


def init(*args: str):
    return CliRunner().invoke(main, ["init", *args])


def catalog_state(dsn: str) -> dict:
    """Row versions (xmin) of every catalog row init touches: a no-op re-run leaves them all unchanged."""
    with psycopg.connect(dsn) as conn:
        tables = conn.execute("SELECT relname, xmin::text, relreplident FROM pg_class WHERE relname = ANY(%s) "
                              "ORDER BY relname", (list(TABLES),)).fetchall()
        publication = conn.execute("SELECT p.xmin::text, r.xmin::text, r.prrelid::regclass::text "
                                   "FROM pg_publication p JOIN pg_publication_rel r ON r.prpubid = p.oid "
                                   "WHERE p.pubname = 'cdc_pub' ORDER BY 3").fetchall()
        heartbeat = conn.execute("SELECT xmin::text FROM cdc_heartbeat").fetchall()
    return {"tables": tables, "publication": publication, "heartbeat": heartbeat}


def cassandra_state(cluster, keyspace: str) -> list:
    session = cluster.connect()
    rows = session.execute("SELECT table_name, id FROM system_schema.tables WHERE keyspace_name = %s", (keyspace,))
    return sorted((r.table_name, r.id) for r in rows)


def test_init_creates_schema_and_a_second_run_is_a_no_op(pg_database, cassandra_cluster):
    keyspace = unique_name("init")
    args = ("--pg-dsn", pg_database, "--cassandra-keyspace", keyspace)
    try:
        first = init(*args)
        assert first.exit_code == 0, first.output
        pg_after_first, cass_after_first = catalog_state(pg_database), cassandra_state(cassandra_cluster, keyspace)
        assert [t[0] for t in pg_after_first["tables"]] == sorted(TABLES)
        assert [rel for _, _, rel in pg_after_first["publication"]] == sorted(TABLES)
        replica = {name: ident for name, _, ident in pg_after_first["tables"]}
        assert replica["trades"] == "f" and replica["klines"] == "d"
        assert {t for t, _ in cass_after_first} >= {"ticker_by_day", "latest_prices", "klines_by_bucket",
                                                     "order_book", "trades_by_day"}

        second = init(*args)
        assert second.exit_code == 0, second.output
        assert catalog_state(pg_database) == pg_after_first
        assert cassandra_state(cassandra_cluster, keyspace) == cass_after_first
    finally:
        cassandra_cluster.connect().execute(f"DROP KEYSPACE IF EXISTS {keyspace}")


def test_init_names_the_unreachable_service(pg_database):
    down_pg = init("--pg-dsn", "postgresql://cdc@127.0.0.1:1/cdc", "--skip-cassandra")
    assert down_pg.exit_code == 1
    assert "PostgreSQL unreachable" in down_pg.output and "port=1" in down_pg.output

    down_cassandra = CliRunner(env={"CDC_CASSANDRA_PORT": "1"}).invoke(
        main, ["init", "--pg-dsn", pg_database, "--cassandra-keyspace", "x"])
    assert down_cassandra.exit_code == 1
    assert "Cassandra unreachable at 127.0.0.1:1" in down_cassandra.output


def test_an_invalid_keyspace_name_is_a_usage_error(pg_database):
    result = init("--pg-dsn", pg_database, "--cassandra-keyspace", "market; DROP")
    assert result.exit_code == 2
    assert "invalid keyspace" in result.output


def test_a_schema_cassandra_refuses_is_one_line_and_exit_1(cassandra_cluster):
    keyspace = unique_name("init_refused")
    result = init("--skip-postgres", "--skip-kafka", "--cassandra-keyspace", keyspace,
                  "--cassandra-replication", "{'class': 'NoSuchStrategy'}")
    try:
        assert result.exit_code == 1, result.output
        assert "Cassandra at 127.0.0.1: applying the schema failed: " in result.output
        assert "NoSuchStrategy" in result.output
        assert isinstance(result.exception, SystemExit)  # a ClickException's exit, not an escaped driver error
    finally:
        cassandra_cluster.connect().execute(f"DROP KEYSPACE IF EXISTS {keyspace}")
