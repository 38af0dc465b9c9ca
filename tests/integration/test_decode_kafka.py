"""`cdc decode --topic`: the captured Debezium records, produced to a real Kafka topic, decode as from a file."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from cdc_cli.cli import main
from tests.unit.debezium_records import (
    AVRO,
    PRECISE,
    avro_bytes,
    avro_schemas_path,
    debezium_dir,
    headers,
    records,
)

pytestmark = pytest.mark.integration


def create_topic(bootstrap: str, topic: str) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})  # kept alive until the creation is confirmed
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(timeout=30)


def produce(bootstrap: str, topic: str, messages: list[tuple[bytes | None, bytes | None, list | None]]) -> None:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for key, value, record_headers in messages:
        producer.produce(topic, key=key, value=value, headers=record_headers)
    assert producer.flush(30) == 0, "Kafka did not acknowledge every record"


def decode(*args: str) -> tuple[int, list[dict]]:
    result = CliRunner().invoke(main, ["decode", *args])
    return result.exit_code, [json.loads(line) for line in result.stdout.splitlines()]


def without_position(doc: dict) -> dict:
    return {k: v for k, v in doc.items() if k not in ("topic", "partition", "offset")}


def test_json_records_from_a_topic_decode_like_the_file(kafka_bootstrap, kafka_topic):
    create_topic(kafka_bootstrap, kafka_topic)
    lines = records(PRECISE)
    produce(kafka_bootstrap, kafka_topic,
            [(_text(r["key"]), _text(r["value"]), h) for r, h in zip(lines, headers())])

    status, docs = decode("--topic", kafka_topic, "--from-beginning", "--max", str(len(lines)),
                          "--timeout", "60", "--bootstrap", kafka_bootstrap)
    _, from_file = decode("--input", str(debezium_dir() / f"{PRECISE}.ndjson"))

    assert status == 0
    assert [(d["topic"], d["partition"], d["offset"]) for d in docs] == [(kafka_topic, 0, n) for n in range(35)]
    assert docs[7]["after"]["quote_volume"] == "9999999999999999999999.99999999"
    assert docs[11]["tombstone"] is True and docs[11]["newkey"]["symbol"] == "ETHBUSD"  # headers came through Kafka
    assert docs[12]["oldkey"]["symbol"] == "ETHUSDT"
    for from_kafka, expected in zip(docs, from_file):
        from_kafka.pop("newkey", None), from_kafka.pop("oldkey", None)
        assert without_position(from_kafka) == without_position(expected)


def test_avro_records_from_a_topic_decode_with_a_schemas_file(kafka_bootstrap, kafka_topic):
    create_topic(kafka_bootstrap, kafka_topic)
    lines = records(AVRO)
    produce(kafka_bootstrap, kafka_topic, [(avro_bytes(r["key"]), avro_bytes(r["value"]), None) for r in lines])

    status, docs = decode("--topic", kafka_topic, "--from-beginning", "--max", str(len(lines)), "--timeout", "60",
                          "--format", "avro", "--schemas", str(avro_schemas_path()), "--bootstrap", kafka_bootstrap)

    assert status == 0 and len(docs) == 34
    assert docs[7]["after"]["price_change"] == "-0.00000001"
    assert docs[32]["after"]["payload"] == "__debezium_unavailable_value"
    assert [d["tombstone"] for d in docs if "tombstone" in d] == [True] * 4


def test_an_undecodable_record_on_the_topic_prints_an_error_and_exits_1(kafka_bootstrap, kafka_topic):
    create_topic(kafka_bootstrap, kafka_topic)
    good = records(PRECISE)[7]
    produce(kafka_bootstrap, kafka_topic, [(None, b"{not json", None), (_text(good["key"]), _text(good["value"]), None)])

    status, docs = decode("--topic", kafka_topic, "--from-beginning", "--max", "2", "--timeout", "60",
                          "--bootstrap", kafka_bootstrap)

    assert status == 1
    assert f"{kafka_topic}[0]@0" in docs[0]["error"] and "not valid JSON" in docs[0]["error"]
    assert docs[1]["after"]["symbol"] == "BNBUSDT"


def _text(value: str | None) -> bytes | None:
    return None if value is None else value.encode()
