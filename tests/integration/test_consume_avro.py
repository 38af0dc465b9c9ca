"""`cdc consume` on the real Avro capture (Confluent wire format): same rows as the JSON capture."""

from __future__ import annotations

import base64

import pytest

from bench.envelopes import fixture_dir, fixture_records
from cdc_consumer import schema
from cdc_consumer.avro import AvroDecoder
from cdc_consumer.schema_registry import SchemaFile
from tests.integration.consume_support import (
    FIXTURE_ONLY_TABLES,
    TOAST_MAPPING,
    TOAST_TABLE,
    assert_row_matches,
    build_consumer,
    create_topic,
    epoch_us,
    produce,
    read_all,
    running,
    source_state,
    wait_caught_up,
    write_mapping,
)
from tests.support import unique_name

pytestmark = pytest.mark.integration


def avro_records() -> list[tuple[bytes | None, bytes | None]]:
    return [(r.key and base64.b64decode(r.key), r.value and base64.b64decode(r.value))
            for r in fixture_records("pg_avro_confluent.ndjson")]


def test_avro_records_apply_like_json_ones_and_undecodable_ones_go_to_the_dlq(kafka_bootstrap, kafka_topic,
                                                                             cassandra_session, tmp_path):
    schema.apply_cql(cassandra_session, cassandra_session.keyspace)
    cassandra_session.execute(TOAST_TABLE)
    records = avro_records()
    good_value = next(v for _, v in records if v)
    poison = {
        4: (None, b"\x00" + (9999).to_bytes(4, "big") + b"\x02AB"),  # schema id the registry does not know
        9: (None, b"\x07" + good_value[1:]),  # wrong magic byte
        20: (None, good_value[: len(good_value) // 2]),  # body cut short
    }
    stream = list(records)
    for offset in sorted(poison):
        stream.insert(offset, poison[offset])
    create_topic(kafka_bootstrap, kafka_topic, 1)
    produce(kafka_bootstrap, kafka_topic, stream, partition=0)

    group = unique_name("g")
    decode = AvroDecoder(SchemaFile(fixture_dir() / "pg_avro_confluent.schemas.json")).decode_record
    mapping = write_mapping(tmp_path, extra_tables=TOAST_MAPPING, skip=FIXTURE_ONLY_TABLES)
    consumer = build_consumer(kafka_bootstrap, cassandra_session, kafka_topic, group, mapping, decode=decode)
    with running(consumer):
        wait_caught_up(kafka_bootstrap, group, kafka_topic)

    parked = read_all(kafka_bootstrap, f"{kafka_topic}.dlq")
    headers = [dict(m.headers()) for m in parked]
    assert [int(h["cdc.original.offset"]) for h in headers] == sorted(poison)
    assert [m.value() for m in parked] == [poison[o][1] for o in sorted(poison)]
    assert headers[0]["cdc.error.type"] == b"UnknownSchemaId"
    assert consumer.totals.dlq == 3 and consumer.totals.applied == 18

    json_records = [(r.source_topic, r.key, r.value) for r in fixture_records()]
    expected = source_state(json_records)["public.ticker_24h"]
    rows = {(r.symbol, r.event_time_us): r for r in cassandra_session.execute("SELECT * FROM ticker_by_day")}
    assert sorted(rows) == sorted((symbol, epoch_us(event_time)) for symbol, event_time in expected)
    for (symbol, event_time), source_row in expected.items():
        assert_row_matches(rows[(symbol, epoch_us(event_time))], source_row, derived={"day": event_time.date()})
    toast = cassandra_session.execute("SELECT payload, note FROM toast_demo WHERE id = 1").one()
    assert (toast.payload, toast.note) == ("0123456789abcdef" * 160, "second")
