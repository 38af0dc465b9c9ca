"""Each Connect / Debezium semantic type, decoded exactly; bad input gives named errors, never a crash."""

from __future__ import annotations

import base64
import math
import uuid
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cdc_consumer.decoder import Decoder, compile_connect_schema
from cdc_consumer.errors import DecodeError, InvalidJson, InvalidValue, SchemaError
from tests.unit.debezium_records import (
    PRECISE,
    compact,
    minimal_twos_complement,
    records,
    value_doc,
)

DECIMAL = "org.apache.kafka.connect.data.Decimal"
SOURCE = {"version": "3.6.3.Final", "connector": "postgresql", "name": "t", "ts_ms": 1, "snapshot": "false",
          "db": "d", "sequence": None, "ts_us": 1000, "ts_ns": None, "schema": "public", "table": "t",
          "txId": 7, "lsn": 8}


def envelope(fields: list[dict], row: dict | None, *, op: str = "c") -> bytes:
    """A JsonConverter value with the given after-row fields, as Debezium lays it out."""
    value_schema = {"type": "struct", "optional": True, "name": "t.public.t.Value", "fields": fields}
    source_schema = {"type": "struct", "optional": False, "name": "io.debezium.connector.postgresql.Source",
                     "field": "source", "fields": [
                         {"type": "int64" if k in ("ts_ms", "ts_us", "ts_ns", "txId", "lsn") else "string",
                          "optional": True, "field": k} for k in SOURCE]}
    schema = {"type": "struct", "optional": False, "name": "t.public.t.Envelope", "version": 2, "fields": [
        {**value_schema, "field": "before"}, {**value_schema, "field": "after"}, source_schema,
        {"type": "string", "optional": False, "field": "op"}]}
    return compact({"schema": schema, "payload": {"before": None, "after": row, "source": SOURCE, "op": op}})


def field(connect_type: str, name: str | None = None, **parameters: str) -> dict:
    spec = {"type": connect_type, "optional": True, "field": "v"}
    if name:
        spec["name"] = name
    if parameters:
        spec["parameters"] = parameters
    return spec


def decode_value(spec: dict, wire_value):
    """The decoded value of one field `v` sent as `wire_value`."""
    return Decoder().decode("t.public.t", None, envelope([spec], {"v": wire_value}), None, 3, 42).after["v"]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


# ------------------------------------------------------------------------------------- types

@pytest.mark.parametrize(("spec", "wire", "expected"), [
    (field("bytes", DECIMAL, scale="8", **{"connect.decimal.precision": "30"}), "HL6NEAA=", Decimal("1234.56000000")),
    (field("bytes", DECIMAL, scale="0"), "/w==", Decimal(-1)),
    (field("bytes", DECIMAL, scale="-2"), "Kg==", Decimal(4200)),  # PostgreSQL 15 allows negative scale
    (field("struct", "io.debezium.data.VariableScaleDecimal"), {"scale": 5, "value": "BMsv"}, Decimal("3.14159")),
    (field("string", "io.debezium.time.ZonedTimestamp"), "2024-01-01T00:00:00.123456Z", utc(2024, 1, 1, 0, 0, 0, 123456)),
    (field("string", "io.debezium.time.ZonedTimestamp"), "2024-01-01T05:30:00+05:30", utc(2024, 1, 1)),
    (field("int64", "io.debezium.time.Timestamp"), 1709210096789, utc(2024, 2, 29, 12, 34, 56, 789000)),
    (field("int64", "io.debezium.time.MicroTimestamp"), -2208988799999999, utc(1900, 1, 1, 0, 0, 0, 1)),
    (field("int64", "io.debezium.time.NanoTimestamp"), 1709210096789012000, utc(2024, 2, 29, 12, 34, 56, 789012)),
    (field("int64", "org.apache.kafka.connect.data.Timestamp"), -1, utc(1969, 12, 31, 23, 59, 59, 999000)),
    (field("int32", "io.debezium.time.Date"), 2932896, date(9999, 12, 31)),
    (field("int32", "org.apache.kafka.connect.data.Date"), -1, date(1969, 12, 31)),
    (field("int32", "io.debezium.time.Time"), 45296789, time(12, 34, 56, 789000)),
    (field("int32", "org.apache.kafka.connect.data.Time"), 0, time(0, 0)),
    (field("int64", "io.debezium.time.MicroTime"), 86399999999, time(23, 59, 59, 999999)),
    (field("int64", "io.debezium.time.NanoTime"), 1000, time(0, 0, 0, 1)),
    (field("string", "io.debezium.time.ZonedTime"), "10:15:30+01:00",
     time(10, 15, 30, tzinfo=timezone(timedelta(hours=1)))),
    (field("int64", "io.debezium.time.MicroDuration"), 37091106500000, timedelta(microseconds=37091106500000)),
    (field("string", "io.debezium.data.Json"), '{"k":  "v"}', '{"k":  "v"}'),
    (field("string", "io.debezium.data.Uuid"), "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
     uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")),
    (field("string", "io.debezium.data.Enum", allowed="a,b"), "b", "b"),
    (field("bytes", "io.debezium.data.Bits", length="10"), b64(bytes([0b101, 0b10])), 0b10_0000_0101),
    (field("bytes"), "3q2+7wD/", bytes.fromhex("deadbeef00ff")),
    (field("double"), "NaN", "nan"),
    (field("double"), "-Infinity", float("-inf")),
    (field("double"), 1e300, 1e300),
    (field("float"), 1.17549435e-38, 1.1754944e-38),  # float32: the shortest text of the same float32
    (field("int64"), 9007199254740993, 9007199254740993),
    (field("boolean"), False, False),
    ({"type": "array", "items": {"type": "string", "optional": True}, "optional": True, "field": "v"},
     ["a", None, "ü"], ["a", None, "ü"]),
    ({"type": "array", "items": {"type": "int32", "name": "io.debezium.time.Date"}, "optional": True, "field": "v"},
     [0, 1], [date(1970, 1, 1), date(1970, 1, 2)]),
    ({"type": "map", "keys": {"type": "string"}, "values": {"type": "bytes", "name": DECIMAL,
      "parameters": {"scale": "2"}}, "optional": True, "field": "v"}, {"a": "ew=="}, {"a": Decimal("1.23")}),
    ({"type": "struct", "optional": True, "field": "v", "name": "io.debezium.data.geometry.Point",
      "fields": [{"type": "double", "field": "x"}, {"type": "bytes", "field": "wkb", "optional": True}]},
     {"x": 1.5, "wkb": "AQ=="}, {"x": 1.5, "wkb": b"\x01"}),
    (field("string", "io.debezium.data.Xml"), "<a/>", "<a/>"),  # unknown name on a known type: the type
    (field("int64", "com.example.Custom"), 5, 5),
], ids=lambda v: v.get("name", v["type"]) if isinstance(v, dict) and "field" in v else None)
def test_semantic_type_decodes_exactly(spec, wire, expected):
    value = decode_value(spec, wire)
    if expected == "nan":
        assert math.isnan(value)
    else:
        assert value == expected
        assert type(value) is type(expected)


def test_null_is_none_for_every_type():
    assert decode_value(field("bytes", DECIMAL, scale="8"), None) is None
    assert decode_value(field("int64", "io.debezium.time.MicroTimestamp"), None) is None


def test_connect_schema_compiles_to_a_reusable_converter():
    convert = compile_connect_schema({"type": "struct", "fields": [field("bytes", DECIMAL, scale="2")]})
    assert convert({"v": "ew=="}) == {"v": Decimal("1.23")}
    assert convert({"v": "/w=="}) == {"v": Decimal("-0.01")}


# ----------------------------------------------------------------------------- property

@st.composite
def decimals(draw) -> tuple[int, int, int]:
    """(unscaled, precision, scale) of a numeric(precision, scale) value, edges included."""
    precision = draw(st.integers(min_value=1, max_value=38))
    scale = draw(st.integers(min_value=0, max_value=min(18, precision)))
    largest = 10 ** precision - 1
    unscaled = draw(st.integers(min_value=-largest, max_value=largest) | st.sampled_from([0, -1, 1, largest, -largest]))
    return unscaled, precision, scale


@settings(max_examples=400, deadline=None)
@given(decimals())
def test_a_decimal_encoded_like_debezium_decodes_back_exactly(case):
    unscaled, precision, scale = case
    expected = Decimal((int(unscaled < 0), tuple(int(d) for d in str(abs(unscaled))), -scale))
    spec = field("bytes", DECIMAL, scale=str(scale), **{"connect.decimal.precision": str(precision)})
    decoded = decode_value(spec, b64(minimal_twos_complement(unscaled)))
    assert decoded == expected
    assert decoded.as_tuple() == expected.as_tuple()  # same digits and exponent -scale, not just equal
    assert format(decoded, "f") == format(expected, "f")


# -------------------------------------------------------------------------------- bad input

def ticker_value_with(column: str, wire_value) -> bytes:
    doc = value_doc(8)
    doc["payload"]["after"][column] = wire_value
    return compact(doc)


@pytest.mark.parametrize(("wire", "reason"), [
    ("HL6NEA", "Incorrect padding"),  # truncated base64
    ("HL6N!EAA=", "Only base64 data"),
    ("", "empty decimal bytes"),
    ("AWvHXi1jD///////////AA==", "more than 20 digits"),  # wider than connect.decimal.precision
    (True, "neither base64 nor a number"),
])
def test_a_bad_decimal_is_an_invalid_value_naming_record_field_and_reason(wire, reason):
    with pytest.raises(InvalidValue) as caught:
        Decoder().decode("crypto.public.ticker_24h", None, ticker_value_with("high_price", wire), None, 2, 99)
    error = caught.value
    assert (error.topic, error.partition, error.offset) == ("crypto.public.ticker_24h", 2, 99)
    assert "after.high_price" in error.reason and reason in error.reason
    assert "crypto.public.ticker_24h[2]@99" in str(error)


@pytest.mark.parametrize("value", [b"not json", b'{"schema":', b"", records(PRECISE)[7]["value"][:-40].encode()])
def test_invalid_json_is_named(value):
    with pytest.raises(InvalidJson) as caught:
        Decoder().decode("t", None, value, None, 0, 5)
    assert caught.value.offset == 5 and "not valid JSON" in caught.value.reason


def test_invalid_json_in_the_key_is_named_too():
    with pytest.raises(InvalidJson):
        Decoder().decode("t", b"{nope", records(PRECISE)[0]["value"])


@pytest.mark.parametrize(("spec", "reason"), [
    (field("bytes", DECIMAL), "has no 'scale' parameter"),
    (field("bytes", DECIMAL, scale="eight"), "non-integer 'scale'"),
    (field("string", "io.debezium.time.Date"), "io.debezium.time.Date on a string field"),
    (field("int128"), "unknown Connect type 'int128'"),
    ({"type": "struct", "field": "v"}, "struct without a 'fields' list"),
])
def test_a_schema_the_decoder_cannot_use_is_a_schema_error(spec, reason):
    with pytest.raises(SchemaError) as caught:
        Decoder().decode("t", None, envelope([spec], {"v": None}), None, 0, 1)
    assert reason in caught.value.reason and caught.value.reason.startswith("value.before.v: ")


@pytest.mark.parametrize(("spec", "wire", "reason"), [
    (field("int64", "io.debezium.time.MicroTimestamp"), 2 ** 62, "outside datetime's years 1..9999"),
    (field("int64", "io.debezium.time.MicroTimestamp"), -62135596800000001, "outside datetime's years"),
    (field("int32", "io.debezium.time.Date"), 2932897, "outside date's years"),
    (field("string", "io.debezium.time.ZonedTimestamp"), "+10000-01-01T00:00:00.000000Z", "ZonedTimestamp"),
    (field("string", "io.debezium.time.ZonedTimestamp"), "infinity", "ZonedTimestamp"),
    (field("string", "io.debezium.time.ZonedTimestamp"), "2024-01-01T00:00:00", "has no UTC offset"),
    (field("int64", "io.debezium.time.MicroTime"), 86400000000, "not a datetime.time"),
    (field("int64", "io.debezium.time.NanoTimestamp"), 1500, "sub-microsecond"),
    (field("double"), "NaNa", "is not a number"),
    (field("string", "io.debezium.data.Uuid"), "not-a-uuid", "Uuid"),
    (field("struct", "io.debezium.data.VariableScaleDecimal"), {"scale": "5", "value": "AQ=="}, "not an integer"),
])
def test_values_python_cannot_hold_exactly_are_errors_not_approximations(spec, wire, reason):
    with pytest.raises(InvalidValue) as caught:
        decode_value(spec, wire)
    assert reason in caught.value.reason and caught.value.offset == 42


def test_a_missing_field_and_an_unknown_op_are_named():
    with pytest.raises(InvalidValue, match="v: missing from the payload"):
        Decoder().decode("t", None, envelope([field("int64", "io.debezium.time.MicroTime")], {}))
    with pytest.raises(InvalidValue, match="op: unknown value .x."):
        Decoder().decode("t", None, envelope([field("int32")], {"v": 1}, op="x"))


def test_a_value_that_is_not_a_change_event_is_named():
    with pytest.raises(InvalidValue, match="not a Debezium change event"):
        Decoder().decode("t", None, b'{"ts_ms": 1}')
    with pytest.raises(InvalidValue, match="expected a struct"):
        Decoder().decode("t", None, b'{"schema":{"type":"string"},"payload":"x"}')


def test_every_decoder_error_is_a_decode_error():
    for error in (InvalidJson, InvalidValue, SchemaError):
        assert issubclass(error, DecodeError)


@settings(max_examples=400, deadline=None)
@given(line=st.integers(min_value=1, max_value=35), where=st.floats(min_value=0, max_value=1),
       junk=st.binary(max_size=3))
def test_mangled_records_raise_only_decode_errors(line, where, junk):
    """Whatever the bytes, the decoder returns an event or raises a DecodeError: it never crashes."""
    record = records(PRECISE)[line - 1]
    value = (record["value"] or "").encode()
    cut = int(where * len(value))
    mangled = value[:cut] + junk + value[cut + len(junk):]
    try:
        Decoder().decode(record["topic"], record["key"], mangled)
    except DecodeError:
        pass


def test_a_float32_out_of_range_is_an_invalid_value():
    with pytest.raises(InvalidValue, match="outside float32's range"):
        decode_value(field("float"), 3.5e38)
