"""Avro through the stack's Apicurio Registry under its global BACKWARD rule, end to end.

- An ADD COLUMN in PostgreSQL makes Debezium's converter register a second version of the table's value
  schema; records written under both versions travel to Cassandra and `cdc verify` finds them identical.
  Oracle: the schema ids in the records' own wire bytes, against the ids the registry lists per version.
- A type change the rule forbids is refused by the registry: the connector task fails and `cdc status`
  reports it with the registry's own message.
"""

from __future__ import annotations

import json

import psycopg
import pytest
import requests
from confluent_kafka import Consumer, TopicPartition

from connectors.connect_client import ConnectClient
from tests.e2e.pipeline import Pipeline, cdc
from tests.support import unique_name, wait_until

pytestmark = pytest.mark.e2e

INSERT_KLINE = ("INSERT INTO klines (symbol, interval, open_time, close, volume, number_of_trades) "
                "VALUES (%s, '1m', '2026-11-21 00:00:00+00'::timestamptz + make_interval(mins => %s), %s, %s, %s)")


def registered_versions(registry_url: str, subject: str) -> list[int]:
    response = requests.get(f"{registry_url}/subjects/{subject}/versions", timeout=5)
    return response.json() if response.status_code == 200 else []


def schema_of_version(registry_url: str, subject: str, version: int) -> dict:
    return requests.get(f"{registry_url}/subjects/{subject}/versions/{version}", timeout=5).json()


def wire_schema_ids(bootstrap: str, topic: str) -> list[int]:
    """The 4-byte schema id after magic byte 0 of every record value on the topic, in offset order."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": unique_name("ids")})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ids: list[int] = []
        for partition in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
            if high == low:
                continue
            consumer.assign([TopicPartition(topic, partition, low)])
            seen = 0
            while seen < high - low:
                for message in consumer.consume(500, 5):
                    assert not message.error(), message.error()
                    seen += 1
                    value = message.value()
                    if value is not None:
                        assert value[0] == 0, "not the Confluent wire format"
                        ids.append(int.from_bytes(value[1:5], "big"))
        return ids
    finally:
        consumer.close()


def row_fields(subject_version: dict) -> set[str]:
    """Column names of the envelope's row record (defined at its first use, `before`; `after` names it)."""
    envelope = json.loads(subject_version["schema"])
    before = next(f for f in envelope["fields"] if f["name"] == "before")
    value = next(branch for branch in before["type"] if isinstance(branch, dict))
    return {f["name"] for f in value["fields"]}


@pytest.mark.parametrize("pipeline", ["avro"], indirect=True)
def test_add_column_registers_a_new_version_and_records_of_both_versions_reach_cassandra(
        pipeline: Pipeline, registry_url, kafka_bootstrap):
    subject = f"{pipeline.topic('klines')}-value"
    pipeline.start_consumer()
    with psycopg.connect(pipeline.dsn, autocommit=True) as conn:
        for minute in range(3):
            conn.execute(INSERT_KLINE, ("EVOLVEUSDT", minute, "101.12345678", "5.5", 7))
        wait_until(lambda: registered_versions(registry_url, subject) == [1], timeout=120,
                   what=f"version 1 of {subject}")
        conn.execute("ALTER TABLE klines ADD COLUMN venue text")
        for minute in range(3, 6):
            conn.execute(INSERT_KLINE, ("EVOLVEUSDT", minute, "102.00000001", "6.25", 9))
        conn.execute("UPDATE klines SET close = 99.5, venue = 'spot' WHERE symbol = 'EVOLVEUSDT' AND open_time = "
                     "'2026-11-21 00:00:00+00'")

    wait_until(lambda: registered_versions(registry_url, subject) == [1, 2], timeout=120,
               what=f"version 2 of {subject} after ADD COLUMN")
    report = pipeline.wait_verified()
    klines = next(t for t in report["tables"] if t["target"] == "klines_by_bucket")
    assert klines["matched"] == 6 and klines["source_rows"] == 6

    first, second = (schema_of_version(registry_url, subject, v) for v in (1, 2))
    assert "venue" not in row_fields(first) and "venue" in row_fields(second)
    ids = wire_schema_ids(kafka_bootstrap, pipeline.topic("klines"))
    assert sorted(ids) == sorted([first["id"]] * 3 + [second["id"]] * 4), ids
    dlq = f"{pipeline.topic('klines')}.dlq"
    assert dlq not in Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": unique_name("x")}
                               ).list_topics(timeout=10).topics


@pytest.mark.parametrize("pipeline", ["avro"], indirect=True)
def test_an_incompatible_change_is_refused_the_task_fails_and_status_shows_the_registrys_message(
        pipeline: Pipeline, registry_url, connect_url):
    subject = f"{pipeline.topic('klines')}-value"
    with psycopg.connect(pipeline.dsn, autocommit=True) as conn:
        conn.execute(INSERT_KLINE, ("BREAKUSDT", 0, "1.5", "2.5", 3))
        wait_until(lambda: registered_versions(registry_url, subject) == [1], timeout=120,
                   what=f"version 1 of {subject}")
        # int -> text: a reader with the new schema cannot read what the old one wrote (Avro has no
        # int -> string promotion), so BACKWARD forbids it.
        conn.execute("ALTER TABLE klines ALTER COLUMN number_of_trades TYPE text")
        conn.execute(INSERT_KLINE, ("BREAKUSDT", 1, "1.5", "2.5", "three"))

    client = ConnectClient(connect_url)
    wait_until(lambda: client.status(pipeline.name).failures, timeout=180, what="the connector task to fail")
    assert registered_versions(registry_url, subject) == [1]

    result = cdc("status", "--json", "--connector", pipeline.name, "--pg-dsn", pipeline.dsn,
                 "--skip", "consumer", "--skip", "cassandra")
    assert result.returncode == 1, result.stderr
    problems = json.loads(result.stdout)["problems"]
    failed = [p for p in problems if "FAILED" in p]
    assert failed, problems
    # The registry's words, passed on by the converter: the row record of `before` (field 0) and `after`
    # (field 1) of the new envelope cannot read what the old one wrote.
    assert f"RuleViolationException: Incompatible artifact: {subject} [AVRO]" in failed[0], failed
    assert "reader union lacking writer type: RECORD at /fields/1/type/1" in failed[0], failed
    shown = cdc("connector", "status", pipeline.name)
    assert shown.returncode == 1 and f"Incompatible artifact: {subject}" in shown.stderr, shown.stderr
