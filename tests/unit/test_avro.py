"""Avro (Confluent wire format): the real capture decodes to the same rows as JSON; bad bytes are named errors."""

from __future__ import annotations

import json
import math
import struct
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cdc_consumer import avro
from cdc_consumer.avro import AvroDecoder, ConfluentWireFormat, compile_avro_schema
from cdc_consumer.decoder import Decoder
from cdc_consumer.errors import DecodeError, InvalidAvro, SchemaError, UnknownSchemaId, WireFormatError
from cdc_consumer.events import UNAVAILABLE, Op
from cdc_consumer.schema_registry import SchemaFile
from tests.unit.debezium_records import (
    AVRO,
    PRECISE,
    avro_bytes,
    avro_schemas_path,
    headers,
    records,
)


class DictSource:
    """A SchemaSource over a dict, counting lookups."""

    def __init__(self, schemas: dict) -> None:
        self.schemas, self.asked = schemas, []

    def schema(self, ref):
        self.asked.append(ref)
        if ref not in self.schemas:
            raise UnknownSchemaId(f"no schema {ref}")
        return self.schemas[ref]


def fixture_schemas() -> dict[int, dict]:
    return {int(k): v for k, v in json.loads(avro_schemas_path().read_text())["schemas_by_id"].items()}


def avro_line(line: int) -> tuple[str, bytes | None, bytes | None]:
    record = records(AVRO)[line - 1]
    return record["topic"], avro_bytes(record["key"]), avro_bytes(record["value"])


def same_values(a, b) -> bool:
    """Equality where NaN equals NaN (the capture has a NaN double)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_values(a[k], b[k]) for k in a)
    return a == b


def test_the_avro_capture_decodes_to_the_same_rows_as_the_json_capture():
    avro, json_decoder = AvroDecoder(SchemaFile(avro_schemas_path())), Decoder()
    for number in range(1, len(records(AVRO)) + 1):
        json_record = records(PRECISE)[number - 1]
        from_json = json_decoder.decode(json_record["topic"], json_record["key"], json_record["value"])
        from_avro = avro.decode(*avro_line(number), None, 0, number - 1)
        assert (from_avro.topic, from_avro.op, from_avro.tombstone) == (from_json.topic, from_json.op, from_json.tombstone)
        assert same_values(from_avro.key, from_json.key), number
        assert same_values(from_avro.before, from_json.before), number
        assert same_values(from_avro.after, from_json.after), number
        if from_json.source is not None:  # another capture run: same table and snapshot phase, other ts/lsn
            assert (from_avro.source.table, from_avro.source.snapshot) == (from_json.source.table, from_json.source.snapshot)


def test_avro_keeps_every_decimal_digit_and_the_toast_sentinel():
    decoder = AvroDecoder(SchemaFile(avro_schemas_path()))
    ticker = decoder.decode(*avro_line(8))
    assert format(ticker.after["quote_volume"], "f") == "9999999999999999999999.99999999"
    assert format(ticker.after["price_change"], "f") == "-0.00000001"
    assert decoder.decode(*avro_line(33)).after["payload"] is UNAVAILABLE


def test_each_schema_id_is_asked_for_once():
    source = DictSource(fixture_schemas())
    decoder = AvroDecoder(source)
    for number in range(1, len(records(AVRO)) + 1):
        decoder.decode(*avro_line(number))
    assert sorted(source.asked) == sorted(set(source.asked))
    assert set(source.asked) == set(fixture_schemas())  # ids 1..10: every key and value schema, both ticker versions


def test_a_schema_guid_header_is_accepted():
    topic, _, value = avro_line(8)
    guid = uuid.uuid4()
    framed = bytes([ConfluentWireFormat.MAGIC_GUID]) + guid.bytes + value[5:]
    decoder = AvroDecoder(DictSource({guid: fixture_schemas()[struct.unpack(">I", value[1:5])[0]]}))
    assert decoder.decode(topic, None, framed).after["symbol"] == "BNBUSDT"


def test_pk_change_headers_decode_with_avro_records_too():
    decoder = AvroDecoder(SchemaFile(avro_schemas_path()))
    event = decoder.decode(*avro_line(11), headers()[10])
    assert event.op is Op.DELETE
    assert decoder.key_headers(event.headers)["newkey"]["symbol"] == "ETHBUSD"


@pytest.mark.parametrize(("data", "reason"), [
    (b"", "empty record"),
    (b"\x00\x00\x01", "too short for magic byte + 4-byte schema id"),
    (b"\x01" + b"\x00" * 8, "too short for magic byte + 16-byte schema GUID"),
    (b"\x02\x00\x00\x00\x01\x02", "unknown magic byte 0x02"),
    (b"{\"schema\":{}}", "unknown magic byte 0x7b"),  # a JSON record on an Avro topic
])
def test_bytes_not_in_confluent_wire_format_are_named(data, reason):
    with pytest.raises(WireFormatError) as caught:
        AvroDecoder(DictSource(fixture_schemas())).decode("t", None, data, None, 1, 7)
    assert reason in caught.value.reason and (caught.value.partition, caught.value.offset) == (1, 7)


def test_an_unknown_schema_id_is_named():
    topic, _, value = avro_line(8)
    with pytest.raises(UnknownSchemaId, match="has no schema 999"):
        AvroDecoder(SchemaFile(avro_schemas_path())).decode(topic, None, b"\x00" + struct.pack(">I", 999) + value[5:])


def test_a_truncated_or_overlong_body_is_invalid_avro():
    topic, _, value = avro_line(8)
    decoder = AvroDecoder(SchemaFile(avro_schemas_path()))
    with pytest.raises(InvalidAvro, match="does not match its schema"):
        decoder.decode(topic, None, value[:40])
    with pytest.raises(InvalidAvro, match="1 bytes left over"):
        decoder.decode(topic, None, value + b"\x00")


def test_an_avro_decimal_without_scale_is_a_schema_error():
    schema = {"type": "record", "name": "V", "fields": [
        {"name": "p", "type": {"type": "bytes", "connect.name": "org.apache.kafka.connect.data.Decimal"}}]}
    with pytest.raises(SchemaError, match="has no 'scale' parameter"):
        compile_avro_schema(schema)


def test_plain_avro_logical_types_map_to_the_connect_ones():
    schema = {"type": "record", "name": "V", "fields": [
        {"name": "d", "type": {"type": "int", "logicalType": "date"}},
        {"name": "p", "type": {"type": "bytes", "logicalType": "decimal", "precision": 40, "scale": 2}}]}
    convert = compile_avro_schema(schema)
    row = convert({"d": 1, "p": (10 ** 39).to_bytes(17, "big", signed=True)})
    assert row["d"].isoformat() == "1970-01-02"
    assert format(row["p"], "f") == "1" + "0" * 37 + ".00"


def test_the_c_extension_is_built_and_used_by_default():
    """`make venv` (pip install -e .) compiles it; when it could not, decoding falls back to fastavro."""
    assert avro._avro_native is not None
    assert AvroDecoder(SchemaFile(avro_schemas_path())).native
    assert not AvroDecoder(SchemaFile(avro_schemas_path()), native=False).native


def test_without_the_extension_fastavro_reads_everything(monkeypatch):
    monkeypatch.setattr(avro, "_avro_native", None)
    decoder = AvroDecoder(SchemaFile(avro_schemas_path()))
    assert not decoder.native
    assert decoder.decode(*avro_line(8)).after["symbol"] == "BNBUSDT"


def test_avro_errors_are_decode_errors():
    for error in (WireFormatError, InvalidAvro, UnknownSchemaId):
        assert issubclass(error, DecodeError)


@settings(max_examples=400, deadline=None)
@given(line=st.integers(min_value=1, max_value=34), where=st.floats(min_value=0, max_value=1),
       junk=st.binary(min_size=1, max_size=3))
def test_mangled_avro_records_raise_only_decode_errors(line, where, junk):
    """Whatever the bytes, the Avro decoder returns an event or raises a DecodeError: it never crashes."""
    topic, key, value = avro_line(line)
    value = value or b"\x00\x00\x00\x00\x02"
    cut = int(where * len(value))
    mangled = value[:cut] + junk + value[cut + len(junk):]
    try:
        AvroDecoder(SchemaFile(avro_schemas_path())).decode(topic, key, mangled)
    except DecodeError:
        pass
