"""The C extension (_avro_native) against the fastavro path, its oracle: identical events, InvalidAvro for bad bytes."""

from __future__ import annotations

import dataclasses
import io
import struct
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import fastavro
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.bench_decoder import avro_records, json_records
from cdc_consumer import avro
from cdc_consumer.avro import AvroDecoder, without_logical_types
from cdc_consumer.errors import DecodeError, InvalidAvro
from cdc_consumer.events import UNAVAILABLE, Op
from cdc_consumer.schema_registry import SchemaFile
from tests.unit.debezium_records import AVRO, avro_bytes, avro_schemas_path, minimal_twos_complement, records

pytestmark = pytest.mark.skipif(avro._avro_native is None, reason="the C extension is not built (test_avro.py fails)")

PLACEHOLDER = UNAVAILABLE.TEXT
DECIMAL = "org.apache.kafka.connect.data.Decimal"


class DictSource:
    def __init__(self, schemas: dict) -> None:
        self.schemas = schemas

    def schema(self, ref):
        return self.schemas[ref]


def decoders(schemas) -> tuple[AvroDecoder, AvroDecoder]:
    """(native, fastavro path) over the same schemas."""
    native = AvroDecoder(schemas)
    assert native.native, "the C extension is not built: `make venv` (pip install -e .) compiles it"
    return native, AvroDecoder(schemas, native=False)


def assert_identical(native, oracle, where: str = "event") -> None:
    """Same types and values all the way down (Decimal('1.0') and 1 compare equal; their reprs do not)."""
    assert type(native) is type(oracle), (where, native, oracle)
    if dataclasses.is_dataclass(native):
        for field in dataclasses.fields(native):
            assert_identical(getattr(native, field.name), getattr(oracle, field.name), f"{where}.{field.name}")
    elif isinstance(native, dict):
        assert list(native) == list(oracle), where
        for name in native:
            assert_identical(native[name], oracle[name], f"{where}.{name}")
    elif isinstance(native, list):
        assert len(native) == len(oracle), where
        for index, (a, b) in enumerate(zip(native, oracle)):
            assert_identical(a, b, f"{where}[{index}]")
    else:
        assert repr(native) == repr(oracle), where


def outcome(decoder: AvroDecoder, *record):
    try:
        return decoder.decode(*record)
    except DecodeError as exc:
        return type(exc), str(exc)


def assert_same_outcome(native: AvroDecoder, oracle: AvroDecoder, *record) -> None:
    """Both paths return identical events, or raise the same error with the same message."""
    assert_identical(outcome(native, *record), outcome(oracle, *record))


def framed(schema_id: int, schema, datum) -> bytes:
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(without_logical_types(schema)), datum)
    return b"\x00" + struct.pack(">I", schema_id) + body.getvalue()


# ------------------------------------------------------------------------------ real records

def test_every_record_of_the_avro_capture_decodes_identically():
    native, oracle = decoders(SchemaFile(avro_schemas_path()))
    for number, record in enumerate(records(AVRO), start=1):
        event = native.decode(record["topic"], avro_bytes(record["key"]), avro_bytes(record["value"]), None, 0, number)
        assert_identical(event, oracle.decode(record["topic"], avro_bytes(record["key"]), avro_bytes(record["value"]),
                                              None, 0, number), f"line {number}")


def test_the_bench_ticker_and_kline_records_decode_identically():
    native, oracle = decoders(SchemaFile(avro_schemas_path()))
    json_side, _ = json_records(400)
    for topic, key, value in avro_records(json_side):
        assert_identical(native.decode(topic, key, value, None, 1, 2), oracle.decode(topic, key, value, None, 1, 2))


# --------------------------------------------------------------------- generated records

SOURCE_SCHEMA = {"type": "record", "name": "Source", "namespace": "io.debezium.connector.postgresql", "fields": [
    {"name": "version", "type": "string"}, {"name": "ts_ms", "type": "long"},
    {"name": "snapshot", "type": [{"type": "string", "connect.name": "io.debezium.data.Enum"}, "null"]},
    {"name": "db", "type": "string"}, {"name": "ts_us", "type": ["null", "long"]},
    {"name": "schema", "type": "string"}, {"name": "table", "type": "string"},
    {"name": "txId", "type": ["null", "long"]}, {"name": "lsn", "type": ["null", "long"]},
    {"name": "origin", "type": ["null", "string"]}]}


def decimal_type(scale: int, precision: int | None) -> dict:
    params = {"scale": str(scale)} | ({} if precision is None else {"connect.decimal.precision": str(precision)})
    return {"type": "bytes", "connect.name": DECIMAL, "connect.parameters": params, "logicalType": "decimal",
            "precision": precision or 100, "scale": scale}


def connect(avro_type: str, name: str) -> dict:
    return {"type": avro_type, "connect.name": name}


def row_schema(scale: int, precision: int | None) -> dict:
    """A table row with every Avro type and the hot Connect types, most of them nullable."""
    nullable = [
        ("amount", decimal_type(scale, precision)), ("name", "string"),
        ("tags", {"type": "array", "items": ["null", "string"]}),
        ("prices", {"type": "array", "items": decimal_type(scale, precision)}),
        ("moments", {"type": "array", "items": connect("string", "io.debezium.time.ZonedTimestamp")}),
        ("at", connect("long", "io.debezium.time.MicroTimestamp")),
        ("at_ms", connect("long", "io.debezium.time.Timestamp")),
        ("at_ns", connect("long", "io.debezium.time.NanoTimestamp")),
        ("day", connect("int", "io.debezium.time.Date")),
        ("zoned", connect("string", "io.debezium.time.ZonedTimestamp")),
        ("clock", connect("long", "io.debezium.time.MicroTime")),
        ("ratio", "float"), ("score", "double"), ("blob", "bytes"), ("flag", "boolean"),
        ("attrs", {"type": "map", "values": ["null", "long"]}),
    ]
    return {"type": "record", "name": "Value", "namespace": "t.public.t", "fields": [
        {"name": "id", "type": "long"}, {"name": "qty", "type": decimal_type(scale, precision)},
        {"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["A", "B", PLACEHOLDER]}},
        {"name": "digest", "type": {"type": "fixed", "name": "Digest", "size": 4}},
        *({"name": name, "type": ["null", avro_type]} for name, avro_type in nullable)]}


def envelope_schema(row: dict) -> dict:
    return {"type": "record", "name": "Envelope", "namespace": "t.public.t", "fields": [
        {"name": "before", "type": ["null", row]}, {"name": "after", "type": ["null", "Value"]},
        {"name": "source", "type": SOURCE_SCHEMA}, {"name": "op", "type": "string"},
        {"name": "ts_ms", "type": ["null", "long"]}, {"name": "ts_us", "type": ["null", "long"]}]}


KEY_SCHEMA = {"type": "record", "name": "Key", "namespace": "t.public.t", "fields": [
    {"name": "id", "type": "long"}, {"name": "zoned", "type": connect("string", "io.debezium.time.ZonedTimestamp")}]}

LONGS = st.integers(min_value=-(2 ** 63), max_value=2 ** 63 - 1)
MICROS = st.integers(min_value=-62135596800000000, max_value=253402300799999999)  # datetime's years 1..9999
ZONES = st.sampled_from([UTC, timezone(timedelta(hours=2)), timezone(-timedelta(hours=9, minutes=30))])
ZONED_TEXT = st.one_of(
    st.datetimes(timezones=ZONES).map(datetime.isoformat),
    st.datetimes(timezones=st.just(UTC)).map(lambda moment: moment.isoformat().replace("+00:00", "Z")))
BAD_ZONED_TEXT = st.one_of(st.datetimes().map(datetime.isoformat), st.text(max_size=8))  # no offset, no date


def mostly(draw, valid, invalid):
    """Values that convert, and now and then one that does not (both paths must raise the same error)."""
    return draw(invalid) if draw(st.sampled_from([False] * 49 + [True])) else draw(valid)


def twos_complement(unscaled: int, padding: int) -> bytes:
    """Connect's bytes, sometimes sign-extended by extra bytes (still the same number)."""
    raw = minimal_twos_complement(unscaled)
    return (b"\xff" if unscaled < 0 else b"\x00") * padding + raw


@st.composite
def decimal_bytes(draw, precision: int | None) -> bytes:
    limit = 10 ** (precision or 60)
    unscaled = draw(st.one_of(st.just(0), st.integers(min_value=-limit + 1, max_value=limit - 1)))
    valid = st.just(twos_complement(unscaled, draw(st.integers(0, 2))))
    return mostly(draw, valid, st.sampled_from([b"", minimal_twos_complement(limit)]))  # empty; a digit too many


@st.composite
def rows(draw, precision: int | None) -> dict:
    def maybe(valid, invalid=None):
        if draw(st.booleans()):
            return None
        return draw(valid) if invalid is None else mostly(draw, valid, invalid)

    def or_placeholder(strategy, placeholder=PLACEHOLDER):
        return st.one_of(strategy, st.just(placeholder))  # an unchanged TOAST column: UNAVAILABLE on both paths

    unavailable_bytes = PLACEHOLDER.encode()
    return {
        "id": draw(LONGS), "qty": draw(or_placeholder(decimal_bytes(precision), unavailable_bytes)),
        "kind": draw(st.sampled_from(["A", "B", PLACEHOLDER])), "digest": draw(st.binary(min_size=4, max_size=4)),
        "amount": maybe(or_placeholder(decimal_bytes(precision), unavailable_bytes)),
        "name": maybe(or_placeholder(st.text())),
        "tags": maybe(or_placeholder(st.lists(st.one_of(st.none(), st.text(max_size=5))), [PLACEHOLDER])),
        "prices": maybe(st.lists(decimal_bytes(precision), max_size=3)),
        "moments": maybe(or_placeholder(st.lists(ZONED_TEXT, max_size=3), [PLACEHOLDER])),
        "at": maybe(MICROS, LONGS), "at_ms": maybe(MICROS.map(lambda us: us // 1000), LONGS),
        "at_ns": maybe(st.integers(-(2 ** 63 // 1000), (2 ** 63 - 1) // 1000).map(lambda us: us * 1000), LONGS),
        "day": maybe(st.integers(min_value=-719162, max_value=2932896), st.integers(-(2 ** 31), 2 ** 31 - 1)),
        "zoned": maybe(or_placeholder(ZONED_TEXT), BAD_ZONED_TEXT),
        "clock": maybe(st.integers(0, 86_399_999_999), LONGS),
        "ratio": maybe(st.floats(width=32)), "score": maybe(st.floats()), "blob": maybe(st.binary(max_size=40)),
        "flag": maybe(st.booleans()), "attrs": maybe(st.dictionaries(st.text(max_size=4), st.one_of(st.none(), LONGS))),
    }


@st.composite
def change_records(draw) -> tuple[dict, bytes, bytes]:
    """(schemas by id, key, value): a Debezium-shaped change of a row with random types and values."""
    scale = draw(st.integers(min_value=0, max_value=18))
    precision = draw(st.one_of(st.none(), st.integers(min_value=max(scale, 1), max_value=38)))
    value_schema = envelope_schema(row_schema(scale, precision))
    source = {"version": "3.6.3.Final", "ts_ms": draw(LONGS), "snapshot": draw(st.sampled_from(["false", "last", None])),
              "db": "d", "ts_us": draw(st.one_of(st.none(), LONGS)), "schema": "public", "table": draw(st.text()),
              "txId": draw(st.one_of(st.none(), LONGS)), "lsn": draw(st.one_of(st.none(), LONGS)), "origin": None}
    value = {"before": draw(st.one_of(st.none(), rows(precision))), "after": draw(st.one_of(st.none(), rows(precision))),
             "source": source, "op": mostly(draw, st.sampled_from(["c", "u", "d", "r"]), st.just("x")),
             "ts_ms": draw(st.one_of(st.none(), LONGS)), "ts_us": draw(st.one_of(st.none(), LONGS))}
    key = {"id": draw(LONGS), "zoned": mostly(draw, ZONED_TEXT, BAD_ZONED_TEXT)}
    return {1: KEY_SCHEMA, 2: value_schema}, framed(1, KEY_SCHEMA, key), framed(2, value_schema, value)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(change_records())
def test_generated_changes_decode_identically_on_both_paths(change):
    schemas, key, value = change
    native, oracle = decoders(DictSource(schemas))
    assert_same_outcome(native, oracle, "t.public.t", key, value, None, 3, 9)


@settings(max_examples=300, deadline=None)
@given(unscaled=st.integers(min_value=-(10 ** 38) + 1, max_value=10 ** 38 - 1), scale=st.integers(0, 18),
       padding=st.integers(0, 3))
def test_decimals_are_exact_at_every_precision_and_scale(unscaled, scale, padding):
    schema = {"type": "record", "name": "R", "fields": [{"name": "p", "type": decimal_type(scale, 38)}]}
    data = framed(1, schema, {"p": twos_complement(unscaled, padding)})
    native, oracle = decoders(DictSource({1: schema}))
    value = native.decode_key(data)["p"]
    assert_identical(value, oracle.decode_key(data)["p"])
    assert value.as_tuple() == Decimal(f"{unscaled}E-{scale}").as_tuple()


def test_decimals_beyond_sixteen_bytes_are_exact_too():
    unscaled = -(10 ** 70) + 12345
    schema = {"type": "record", "name": "R", "fields": [{"name": "p", "type": decimal_type(5, None)}]}
    data = framed(1, schema, {"p": minimal_twos_complement(unscaled)})
    assert AvroDecoder(DictSource({1: schema})).decode_key(data)["p"] == Decimal(f"{unscaled}E-5")


def test_transaction_markers_and_undecidable_envelopes_decode_identically():
    marker = {"type": "record", "name": "TransactionMetadataValue", "fields": [
        {"name": "status", "type": "string"}, {"name": "id", "type": "string"},
        {"name": "ts_ms", "type": "long"},
        {"name": "data_collections", "type": ["null", {"type": "array", "items": {
            "type": "record", "name": "Count", "fields": [
                {"name": "data_collection", "type": "string"}, {"name": "event_count", "type": "long"},
                {"name": "at", "type": connect("long", "io.debezium.time.MicroTimestamp")}]}}]}]}
    nullable_op = {"type": "record", "name": "Envelope", "fields": [
        {"name": "after", "type": ["null", {"type": "record", "name": "V", "fields": [
            {"name": "at", "type": connect("long", "io.debezium.time.MicroTimestamp")}]}]},
        {"name": "op", "type": ["null", "string"]}, {"name": "status", "type": ["null", "string"]}]}
    native, oracle = decoders(DictSource({1: marker, 2: nullable_op}))
    for data in (framed(1, marker, {"status": "END", "id": "7:8", "ts_ms": 1_700_000_000_000,
                                    "data_collections": [{"data_collection": "public.t", "event_count": 2, "at": 7}]}),
                 framed(2, nullable_op, {"after": {"at": 5}, "op": "c", "status": None}),
                 framed(2, nullable_op, {"after": None, "op": None, "status": "BEGIN"})):
        assert_same_outcome(native, oracle, "t", None, data)
    assert native.decode("t", None, framed(2, nullable_op, {"after": {"at": 5}, "op": "u", "status": None})).op is Op.UPDATE


# ------------------------------------------------------------------------------- bad bytes

def capture_value(line: int) -> tuple[str, bytes]:
    record = records(AVRO)[line - 1]
    return record["topic"], avro_bytes(record["value"])


@pytest.mark.parametrize("line", [1, 8, 20, 33])
def test_every_truncation_of_a_body_is_invalid_avro(line):
    topic, value = capture_value(line)
    decoder = AvroDecoder(SchemaFile(avro_schemas_path()))
    for cut in range(5, len(value)):
        with pytest.raises(InvalidAvro, match="truncated"):
            decoder.decode(topic, None, value[:cut])


def test_trailing_bytes_are_invalid_avro():
    topic, value = capture_value(8)
    with pytest.raises(InvalidAvro, match="3 bytes left over"):
        AvroDecoder(SchemaFile(avro_schemas_path())).decode(topic, None, value + b"\x00\x01\x02")


def test_a_union_branch_the_schema_does_not_have_is_invalid_avro():
    topic, value = capture_value(8)
    assert value[5] == 0  # `before`: branch 0 (null)
    for branch in (b"\x06", b"\x01"):  # 3, and -1
        with pytest.raises(InvalidAvro, match=r"union branch index -?\d+ out of range 0\.\.1 at byte 1"):
            AvroDecoder(SchemaFile(avro_schemas_path())).decode(topic, None, value[:5] + branch + value[6:])


SMALL = {"type": "record", "name": "R", "fields": [
    {"name": "s", "type": "string"}, {"name": "a", "type": {"type": "array", "items": "long"}}]}


@pytest.mark.parametrize(("body", "reason"), [
    (b"\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01", "varint longer than 10 bytes"),
    (b"\x80\x80\x80\x80\x80\x80\x80\x80\x01", r"truncated: string of 36028797018963968 bytes, 0 left"),
    (b"\x03", "negative string length -2"),
    (b"\x02a\xfe\xff\xff\xff\x0f", r"a block of 2147483647 items cannot fit in the 0 bytes left"),
    (b"\x02a\x01\x01\x02", "bad block header"),  # count -1, then a negative byte size
    (b"\x02\xff\x00", "Avro body does not match its schema"),  # not UTF-8: fastavro names it
])
def test_hostile_lengths_and_counts_are_invalid_avro(body, reason):
    with pytest.raises(InvalidAvro, match=reason):
        AvroDecoder(DictSource({1: SMALL})).decode("t", b"\x00\x00\x00\x00\x01" + body, None)


def test_an_array_of_millions_of_zero_byte_items_is_invalid_avro():
    nulls = {"type": "record", "name": "R", "fields": [{"name": "a", "type": {"type": "array", "items": "null"}}]}
    decoder = AvroDecoder(DictSource({1: nulls}))
    assert decoder.decode_key(framed(1, nulls, {"a": [None] * 3})) == {"a": [None] * 3}
    block = b"\xfe\xff\x3f"  # 524,287 nulls, in three bytes
    with pytest.raises(InvalidAvro, match="a block of 524287 items cannot fit"):
        decoder.decode_key(b"\x00\x00\x00\x00\x01" + block * 2 + b"\x00")


@settings(max_examples=400, deadline=None)
@given(line=st.integers(min_value=1, max_value=34), where=st.floats(min_value=0, max_value=1),
       junk=st.binary(min_size=1, max_size=4))
def test_mangled_records_that_the_extension_accepts_decode_as_fastavro_decodes_them(line, where, junk):
    record = records(AVRO)[line - 1]
    value = avro_bytes(record["value"]) or b"\x00\x00\x00\x00\x02"
    cut = 5 + int(where * (len(value) - 5))
    mangled = value[:cut] + junk + value[cut + len(junk):]
    native, oracle = decoders(SchemaFile(avro_schemas_path()))
    event = outcome(native, record["topic"], None, mangled)
    if not isinstance(event, tuple):  # the extension is stricter (10-byte varints, union indexes): never laxer
        assert_identical(event, oracle.decode(record["topic"], None, mangled))


@pytest.mark.parametrize("description", [
    ("nope",), ("long",), ("fixed", None, -1), ("enum", None, ()), ("union", ()), ("record", (("a",),)),
    ("string", ("decimal", 2, 10)), ("bytes", ("decimal", 10 ** 7, None)), ("call", ("long", None), 3), [],
])
def test_a_bad_program_description_is_refused_not_crashed_on(description):
    with pytest.raises((ValueError, TypeError)):
        avro._avro_native.Program(description, True, UNAVAILABLE)
