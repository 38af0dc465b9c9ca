"""The project's registry client and Avro decoder against the stack's real Apicurio Registry.

Apicurio's Confluent-compatible API numbers schemas by content id: registering the same schema under two
subjects gives one id, and `GET /schemas/ids/{id}` serves it. The decoder reads bytes framed with that id.
"""

from __future__ import annotations

import io
import json
from decimal import Decimal

import fastavro
import pytest
import requests

from cdc_consumer.avro import AvroDecoder
from cdc_consumer.errors import UnknownSchemaId
from cdc_consumer.schema_registry import RegistryClient
from tests.support import unique_name

CONTENT_TYPE = {"Content-Type": "application/vnd.schemaregistry.v1+json"}


def envelope_schema(name: str) -> dict:
    row = {"type": "record", "name": "Value", "fields": [
        {"name": "symbol", "type": "string"},
        {"name": "price", "type": {"type": "bytes", "logicalType": "decimal", "precision": 30, "scale": 8,
                                   "connect.name": "org.apache.kafka.connect.data.Decimal",
                                   "connect.parameters": {"scale": "8"}}}]}
    return {"type": "record", "name": "Envelope", "namespace": name, "fields": [
        {"name": "before", "type": ["null", row], "default": None},
        {"name": "after", "type": ["null", "Value"], "default": None},
        {"name": "op", "type": "string"},
        {"name": "ts_ms", "type": ["null", "long"], "default": None}]}


def register(registry_url: str, subject: str, schema: dict) -> int:
    response = requests.post(f"{registry_url}/subjects/{subject}/versions", headers=CONTENT_TYPE,
                             data=json.dumps({"schema": json.dumps(schema)}), timeout=10)
    assert response.status_code == 200, response.text
    return response.json()["id"]


def test_the_client_fetches_by_content_id_and_one_schema_under_two_subjects_shares_it(registry_url):
    name = unique_name("reg")
    schema = envelope_schema(name)
    first = register(registry_url, f"{name}.a-value", schema)
    second = register(registry_url, f"{name}.b-value", schema)
    assert first == second  # content id: same bytes, same id
    assert RegistryClient(registry_url).schema(first) == json.loads(json.dumps(schema))


def test_an_id_the_registry_does_not_have_is_unknown(registry_url):
    with pytest.raises(UnknownSchemaId):
        RegistryClient(registry_url).schema(2**31 - 1)


def test_the_decoder_reads_confluent_framed_avro_written_under_an_apicurio_id(registry_url):
    name = unique_name("reg")
    schema = envelope_schema(name)
    schema_id = register(registry_url, f"{name}.public.klines-value", schema)
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(schema), {
        "before": None, "after": {"symbol": "BTCUSDT", "price": Decimal("97123.12345678")}, "op": "c", "ts_ms": 1})
    framed = b"\x00" + schema_id.to_bytes(4, "big") + body.getvalue()
    event = AvroDecoder(registry_url).decode(f"{name}.public.klines", None, framed)
    assert event.after == {"symbol": "BTCUSDT", "price": Decimal("97123.12345678")}
