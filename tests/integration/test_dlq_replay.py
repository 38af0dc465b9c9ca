"""`cdc dlq list|replay` on the real Kafka, Cassandra and PostgreSQL (issue 14).

A DLQ filled by a mapping error (the klines mapping restricted to topics the stream does not use): a
replay with the mapping still broken parks every record again (attempt 2, nothing lost); after the fix
the replay applies them, `cdc verify` and the independent oracle (`tests/oracle.py`) find PostgreSQL and
Cassandra identical, and a second replay finds nothing to do and changes nothing.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import psycopg
import pytest
import yaml
from click.testing import CliRunner

from bench.envelopes import kline_stream
from cdc_cli.cli import main
from cdc_consumer import schema
from tests.integration.consume_support import (
    build_consumer,
    create_topic,
    produce,
    read_all,
    running,
    source_state,
    wait_caught_up,
    write_mapping,
)
from tests.oracle import assert_replicated
from tests.support import unique_name

pytestmark = pytest.mark.integration
RECORDS = 300


def cdc(*args: str):
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def insert_source_rows(dsn: str, rows: list[dict]) -> None:
    columns = list(rows[0])
    with psycopg.connect(dsn) as conn:
        schema.apply_sql(conn)
        with conn.cursor() as cur:
            cur.executemany(f"INSERT INTO klines ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))})",
                            [[row[c] for c in columns] for row in rows])


def headers_of(message) -> dict[str, str]:
    return {k: v.decode() for k, v in message.headers() or ()}


def test_a_dlq_filled_by_a_mapping_error_replays_after_the_fix_and_verifies_identical(
        pg_database, kafka_bootstrap, kafka_topic, cassandra_session, tmp_path):
    keyspace = cassandra_session.keyspace
    schema.apply_cql(cassandra_session, keyspace)
    stream = kline_stream(RECORDS, symbols=6, start=datetime(2038, 1, 1, tzinfo=UTC))
    decoded = source_state([(kafka_topic, k, v) for k, v in stream.records])["public.klines"]
    assert {key: {c: row[c] for c in stream.rows[key]} for key, row in decoded.items()} == stream.rows
    rows = list(decoded.values())  # every column of the envelopes, read without the product's decoder
    assert len(rows) == RECORDS
    insert_source_rows(pg_database, rows)
    create_topic(kafka_bootstrap, kafka_topic, 3)
    produce(kafka_bootstrap, kafka_topic, stream.records)

    fixed = write_mapping(tmp_path)
    document = yaml.safe_load(fixed.read_text())
    document["tables"]["public.klines"]["topics"] = ["nowhere.*"]  # the mapping error
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump(document, sort_keys=False))

    group = unique_name("g")
    with running(build_consumer(kafka_bootstrap, cassandra_session, kafka_topic, group, mapping_file=broken)):
        wait_caught_up(kafka_bootstrap, group, kafka_topic)
    dlq = f"{kafka_topic}.dlq"
    assert len(read_all(kafka_bootstrap, dlq)) == RECORDS
    assert cassandra_session.execute("SELECT count(*) FROM klines_by_bucket").one()[0] == 0

    code, output = cdc("dlq", "list", "--topic", dlq, "--json", "--samples", "1")
    assert code == 0, output
    [listing] = json.loads(output)
    assert listing["by_reason"] == [{"reason": "UnmappableRecord", "source_topic": kafka_topic, "records": RECORDS,
                                     "not_replayed": RECORDS}]
    sample = listing["samples"][0]["decoded"]  # the last parked record, decoded as from its source topic
    assert (sample["topic"], sample["source"]["table"]) == (kafka_topic, "klines")
    assert sample["after"]["symbol"] in {row["symbol"] for row in rows}

    replay = ("dlq", "replay", "--topic", dlq, "--cassandra-keyspace", keyspace)
    code, output = cdc(*replay, "--dry-run", "--mapping", str(fixed))
    assert code == 0 and f"{RECORDS:>8}  would apply" in output, output

    code, output = cdc(*replay, "--mapping", str(broken))  # still broken: parked again, never lost
    assert code == 0, output
    assert f"applied 0, parked again {RECORDS}" in output
    parked = read_all(kafka_bootstrap, dlq)
    assert len(parked) == 2 * RECORDS
    again = [h for h in map(headers_of, parked) if h["cdc.dlq.attempt"] == "2"]
    assert len(again) == RECORDS
    assert all(h["cdc.original.topic"] == kafka_topic and h["cdc.error.type"] == "UnmappableRecord" for h in again)
    assert len({(h["cdc.original.partition"], h["cdc.original.offset"]) for h in again}) == RECORDS

    code, output = cdc(*replay, "--mapping", str(fixed))
    assert code == 0, output
    assert f"applied {RECORDS}, parked again 0" in output
    assert cassandra_session.execute("SELECT count(*) FROM klines_by_bucket").one()[0] == RECORDS

    code, output = cdc("verify", "--json", "--pg-dsn", pg_database, "--cassandra-keyspace", keyspace,
                       "--table", "public.klines")
    assert code == 0, output
    [klines] = json.loads(output)["tables"]
    assert (klines["target"], klines["identical"], klines["matched"]) == ("klines_by_bucket", True, RECORDS), klines
    # and the judge that shares no code with the write path: PostgreSQL's own conversions against plain CQL
    assert assert_replicated(pg_database, cassandra_session, keyspace, ("klines_by_bucket",),
                             minimum_rows=RECORDS) == {"klines_by_bucket": RECORDS}

    code, output = cdc(*replay, "--mapping", str(fixed))  # twice: nothing left, nothing changes
    assert code == 0 and "nothing to replay" in output, output
    assert len(read_all(kafka_bootstrap, dlq)) == 2 * RECORDS
    assert cassandra_session.execute("SELECT count(*) FROM klines_by_bucket").one()[0] == RECORDS
