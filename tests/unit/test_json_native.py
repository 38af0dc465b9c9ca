"""The C extension (_json_native) against the Python path, its oracle: identical events, the same named errors."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.bench_decoder import json_records
from cdc_consumer import decoder as decoder_module
from cdc_consumer.decoder import Decoder
from cdc_consumer.events import UNAVAILABLE
from tests.unit.debezium_records import (
    PRECISE,
    STRING_MODE,
    debezium_dir,
    headers,
    minimal_twos_complement,
    numeric_format_value,
    schemaless,
    transaction_record,
)
from tests.unit.test_avro_native import assert_identical, assert_same_outcome, outcome

pytestmark = pytest.mark.skipif(decoder_module._json_native is None,
                                reason="the C extension is not built (a test in test_decoder.py fails)")

PLACEHOLDER = UNAVAILABLE.TEXT
DECIMAL = "org.apache.kafka.connect.data.Decimal"


def decoders() -> tuple[Decoder, Decoder]:
    """(native, Python path)."""
    native = Decoder()
    assert native.native, "the C extension is not built: `make venv` (pip install -e .) compiles it"
    return native, Decoder(native=False)


def wire(value) -> bytes | None:
    """A fixture line's key or value as the decoder gets it (the decoded Avro capture holds JSON objects)."""
    if value is None or isinstance(value, str):
        return None if value is None else value.encode()
    return json.dumps(value, separators=(",", ":")).encode()


# ------------------------------------------------------------------------------ real records

@pytest.mark.parametrize("path", sorted(debezium_dir().glob("*.ndjson")), ids=lambda path: path.name)
def test_every_record_of_every_capture_decodes_identically(path):
    native, oracle = decoders()
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    assert lines
    for number, line in enumerate(lines, start=1):
        if "topic" not in line:  # the headers file: each line's headers, decoded as a key header would be
            for _, value in line["headers"]:
                assert_identical(outcome(native, "h", value.encode(), None), outcome(oracle, "h", value.encode(), None))
            continue
        assert_same_outcome(native, oracle, line["topic"], wire(line.get("key")), wire(line.get("value")), None, 0, number)


@pytest.mark.parametrize("name", [PRECISE, STRING_MODE])
def test_json_captures_take_the_native_path_with_headers_and_in_their_variants(name):
    native, oracle = decoders()
    lines = [json.loads(line) for line in (debezium_dir() / f"{name}.ndjson").read_text().splitlines()]
    captured_headers = headers() if name == PRECISE else [[]] * len(lines)
    for number, (line, record_headers) in enumerate(zip(lines, captured_headers), start=1):
        key, value = wire(line["key"]), wire(line["value"])
        assert_same_outcome(native, oracle, line["topic"], key, value, record_headers, 2, number)
        assert_same_outcome(native, oracle, line["topic"], schemaless(line["key"]), schemaless(line["value"]))
        assert native.key_headers(dict(record_headers)) == oracle.key_headers(dict(record_headers))
    assert native.native_fallbacks == 0


def test_decimal_format_numeric_records_decode_identically():
    native, oracle = decoders()
    lines = [json.loads(line) for line in (debezium_dir() / f"{PRECISE}.ndjson").read_text().splitlines()]
    for number, line in enumerate(lines, start=1):
        if line["value"] is not None and '"after":{' in line["value"]:
            value = numeric_format_value(number)
            for _ in range(2):  # the first one switches the schema to exact numbers, the second uses them
                assert_same_outcome(native, oracle, line["topic"], wire(line["key"]), value)


def test_transaction_markers_and_tombstones_decode_identically():
    native, oracle = decoders()
    for status in ("BEGIN", "END"):
        key, value = transaction_record(status, "571:53195832", 1_705_000_000_000, {"public.klines": 3})
        assert_same_outcome(native, oracle, "crypto.transaction", key, value)
    line = json.loads((debezium_dir() / f"{PRECISE}.ndjson").read_text().splitlines()[0])
    assert_same_outcome(native, oracle, line["topic"], wire(line["key"]), None)
    schema_text = line["value"].split(',"payload":')[0]
    assert_same_outcome(native, oracle, line["topic"], wire(line["key"]), (schema_text + ',"payload":null}').encode())


def test_the_bench_ticker_and_kline_records_decode_identically_in_one_native_call():
    native, oracle = decoders()
    records, _ = json_records(400)
    for topic, key, value in records:
        assert_identical(native.decode(topic, key, value, None, 1, 2), oracle.decode(topic, key, value, None, 1, 2))
    assert native.native_fallbacks == 0


# --------------------------------------------------------------------- generated records

def decimal_schema(field: str, scale: int, precision: int | None, optional: bool = True) -> dict:
    params = {"scale": str(scale)} | ({} if precision is None else {"connect.decimal.precision": str(precision)})
    return {"type": "bytes", "optional": optional, "name": DECIMAL, "version": 1, "parameters": params, "field": field}


def named(connect_type: str, name: str | None, field: str | None = None, **extra) -> dict:
    schema = {"type": connect_type, "optional": True, **extra}
    if name is not None:
        schema["name"] = name
    if field is not None:
        schema["field"] = field
    return schema


def row_schema(scale: int, precision: int | None) -> dict:
    """A table row with the hot Connect types, the rare ones, containers and a nested struct."""
    nested = {"type": "struct", "optional": True, "field": "nested", "fields": [
        decimal_schema("a", scale, precision), named("string", "io.debezium.time.ZonedTimestamp", "b")]}
    return {"type": "struct", "optional": True, "name": "t.public.t.Value", "field": "after", "fields": [
        named("int64", None, "id"), decimal_schema("qty", scale, precision, optional=False),
        decimal_schema("amount", scale, precision), named("string", None, "name"),
        named("array", None, "tags", items=named("string", None)),
        named("array", None, "prices", items=decimal_schema(None, scale, precision)),
        named("array", None, "moments", items=named("string", "io.debezium.time.ZonedTimestamp")),
        named("int64", "io.debezium.time.MicroTimestamp", "at"), named("int64", "io.debezium.time.Timestamp", "at_ms"),
        named("int64", "io.debezium.time.NanoTimestamp", "at_ns"), named("int32", "io.debezium.time.Date", "day"),
        named("string", "io.debezium.time.ZonedTimestamp", "zoned"), named("int64", "io.debezium.time.MicroTime", "clock"),
        named("float", None, "ratio"), named("double", None, "score"), named("bytes", None, "blob"),
        named("boolean", None, "flag"), named("map", None, "attrs", keys=named("string", None), values=named("int64", None)),
        named("struct", "io.debezium.data.VariableScaleDecimal", "vsd", fields=[
            named("int32", None, "scale"), named("bytes", None, "value")]),
        named("string", "io.debezium.data.Uuid", "uid"), nested]}


def envelope_schema(row: dict) -> dict:
    source = {"type": "struct", "optional": False, "field": "source", "fields": [
        named("string", None, "version"), named("int64", None, "ts_ms"),
        named("string", "io.debezium.data.Enum", "snapshot"),
        named("string", None, "db"), named("string", None, "sequence"), named("int64", None, "ts_us"),
        named("string", None, "schema"), named("string", None, "table"), named("int64", None, "txId"),
        named("int64", None, "lsn")]}
    return {"type": "struct", "optional": False, "name": "t.public.t.Envelope", "fields": [
        {**row, "field": "before"}, row, source, named("string", None, "op"), named("int64", None, "ts_ms"),
        named("int64", None, "ts_us")]}


KEY_SCHEMA = {"type": "struct", "optional": False, "name": "t.public.t.Key", "fields": [
    named("int64", None, "id"), named("string", "io.debezium.time.ZonedTimestamp", "zoned")]}

LONGS = st.integers(min_value=-(2 ** 63), max_value=2 ** 63 - 1)
MICROS = st.integers(min_value=-62135596800000000, max_value=253402300799999999)
ZONES = st.sampled_from([UTC, timezone(timedelta(hours=2)), timezone(-timedelta(hours=9, minutes=30))])
ZONED_TEXT = st.one_of(
    st.datetimes(timezones=ZONES).map(datetime.isoformat),
    st.datetimes(timezones=st.just(UTC)).map(lambda moment: moment.isoformat().replace("+00:00", "Z")))
WRONG_TYPES = st.one_of(st.booleans(), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=6),
                        st.just([1]), st.just({"a": 1}), st.integers(2 ** 63, 2 ** 64))


def mostly(draw, valid, invalid):
    """Values that convert, and now and then one that does not (both paths must raise the same error)."""
    return draw(invalid) if draw(st.sampled_from([False] * 49 + [True])) else draw(valid)


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


@st.composite
def decimal_text(draw, precision: int | None) -> str:
    limit = 10 ** (precision or 40)
    unscaled = draw(st.one_of(st.just(0), st.integers(min_value=-limit + 1, max_value=limit - 1)))
    padding = (b"\xff" if unscaled < 0 else b"\x00") * draw(st.integers(0, 2))
    valid = st.just(b64(padding + minimal_twos_complement(unscaled)))
    invalid = st.one_of(st.sampled_from(["", "!!!!", "AB==", "AAB=", "AA=", "A===", "QQ", "AA==AA==", " AA=", "é" * 4,
                                         b64(minimal_twos_complement(limit))]),
                        st.integers(-(10 ** 6), 10 ** 6), st.floats(allow_nan=False, allow_infinity=False), WRONG_TYPES)
    return mostly(draw, valid, invalid)


@st.composite
def rows(draw, precision: int | None) -> dict:
    def maybe(valid, invalid=WRONG_TYPES):
        if draw(st.booleans()):
            return None
        return mostly(draw, valid, invalid)

    def or_placeholder(strategy, placeholder=PLACEHOLDER):
        return st.one_of(strategy, st.just(placeholder))

    placeholder_bytes = b64(PLACEHOLDER.encode())
    row = {
        "id": draw(LONGS), "qty": draw(or_placeholder(decimal_text(precision), placeholder_bytes)),
        "amount": maybe(or_placeholder(decimal_text(precision), placeholder_bytes)),
        "name": maybe(or_placeholder(st.text(max_size=8))),
        "tags": maybe(or_placeholder(st.lists(st.one_of(st.none(), st.text(max_size=5)), max_size=3), [PLACEHOLDER])),
        "prices": maybe(st.lists(st.one_of(st.none(), decimal_text(precision)), max_size=3)),
        "moments": maybe(or_placeholder(st.lists(ZONED_TEXT, max_size=3), [PLACEHOLDER])),
        "at": maybe(MICROS, st.one_of(LONGS, WRONG_TYPES)),
        "at_ms": maybe(MICROS.map(lambda us: us // 1000), st.one_of(LONGS, WRONG_TYPES)),
        "at_ns": maybe(st.integers(-(2 ** 63 // 1000), (2 ** 63 - 1) // 1000).map(lambda us: us * 1000),
                       st.one_of(LONGS, WRONG_TYPES)),
        "day": maybe(st.integers(min_value=-719162, max_value=2932896), st.one_of(LONGS, WRONG_TYPES)),
        "zoned": maybe(or_placeholder(ZONED_TEXT), st.one_of(st.datetimes().map(datetime.isoformat), WRONG_TYPES)),
        "clock": maybe(st.integers(0, 86_399_999_999)),
        "ratio": maybe(st.one_of(st.floats(width=32, allow_nan=False, allow_infinity=False),
                                 st.sampled_from(["NaN", "Infinity", "-Infinity"]))),
        "score": maybe(st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-(10 ** 20), 10 ** 20),
                                 st.sampled_from(["NaN", "Infinity", "-Infinity"]))),
        "blob": maybe(or_placeholder(st.binary(max_size=40).map(b64), placeholder_bytes),
                      st.sampled_from(["AB==", "!", "AA=", "é"])),
        "flag": maybe(st.booleans()), "attrs": maybe(st.dictionaries(st.text(max_size=4), st.one_of(st.none(), LONGS))),
        "vsd": maybe(st.fixed_dictionaries({"scale": st.integers(0, 10),
                                            "value": st.integers(-(10 ** 20), 10 ** 20).map(
                                                lambda n: b64(minimal_twos_complement(n)))})),
        "uid": maybe(st.uuids().map(str)),
        "nested": maybe(st.fixed_dictionaries({"a": st.one_of(st.none(), decimal_text(precision)),
                                               "b": st.one_of(st.none(), ZONED_TEXT)})),
    }
    for name in draw(st.lists(st.sampled_from(sorted(row)), max_size=2, unique=True)):  # missing from the payload
        if draw(st.sampled_from([False] * 9 + [True])):
            del row[name]
    return row


@st.composite
def change_records(draw) -> list[tuple[bytes, bytes]]:
    """(key, value) records of one Debezium-shaped table, random types and values (a few, so that a NUMERIC
    decimal met in the first one switches the schema to exact numbers for the next ones on both paths)."""
    scale = draw(st.integers(min_value=0, max_value=18))
    precision = draw(st.one_of(st.none(), st.integers(min_value=max(scale, 1), max_value=38)))
    value_schema = envelope_schema(row_schema(scale, precision))
    spaced = draw(st.booleans())  # other spacing: the general path that parses the whole document
    records = []
    for _ in range(draw(st.integers(1, 3))):
        source = {"version": "3.6.3.Final", "ts_ms": draw(st.one_of(LONGS, st.just("7"))),
                  "snapshot": draw(st.sampled_from(["false", "last", None, "bogus", True])), "db": "d",
                  "sequence": '[null,"1"]', "ts_us": draw(st.one_of(st.none(), LONGS)), "schema": "public",
                  "table": draw(st.text(max_size=5)), "txId": draw(st.one_of(st.none(), LONGS)),
                  "lsn": draw(st.one_of(st.none(), LONGS))}
        payload = {"before": draw(st.one_of(st.none(), rows(precision))),
                   "after": draw(st.one_of(st.none(), rows(precision))),
                   "source": mostly(draw, st.just(source), st.sampled_from([None, "x", [1]])),
                   "op": mostly(draw, st.sampled_from(["c", "u", "d", "r"]), st.sampled_from(["x", None, 1, [1]])),
                   "ts_ms": draw(st.one_of(st.none(), LONGS, st.just("9"))), "ts_us": draw(st.one_of(st.none(), LONGS))}
        key = {"id": draw(LONGS), "zoned": mostly(draw, ZONED_TEXT, WRONG_TYPES)}
        records.append((document(KEY_SCHEMA, key, spaced), document(value_schema, payload, spaced)))
    return records


def document(schema: dict, payload: dict, spaced: bool) -> bytes:
    """JsonConverter's compact layout, or other spacing; json (not orjson) writes ints beyond 64 bits too."""
    return json.dumps({"schema": schema, "payload": payload}, separators=None if spaced else (",", ":")).encode()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(change_records())
def test_generated_changes_decode_identically_on_both_paths(records):
    native, oracle = decoders()
    for number, (key, value) in enumerate(records):
        assert_same_outcome(native, oracle, "t.public.t", key, value, [("h", b"1")] if number else None, 3, number)


@settings(max_examples=300, deadline=None)
@given(unscaled=st.integers(min_value=-(10 ** 38) + 1, max_value=10 ** 38 - 1), scale=st.integers(0, 18),
       padding=st.integers(0, 3))
def test_decimals_are_exact_at_every_precision_and_scale(unscaled, scale, padding):
    raw = (b"\xff" if unscaled < 0 else b"\x00") * padding + minimal_twos_complement(unscaled)
    key = orjson.dumps({"schema": {"type": "struct", "fields": [decimal_schema("p", scale, 38)]},
                        "payload": {"p": b64(raw)}})
    native, oracle = decoders()
    value = native.decode_key(key)["p"]
    assert_identical(value, oracle.decode_key(key)["p"])
    assert native.native_fallbacks == 0
    assert value.as_tuple() == Decimal(f"{unscaled}E-{scale}").as_tuple()


# ------------------------------------------------------------------------------- bad input

def bench_record() -> tuple[str, bytes, bytes]:
    return json_records(2)[0][0]


def test_every_truncation_of_a_record_fails_or_decodes_as_the_python_path_does():
    topic, key, value = bench_record()
    native, oracle = decoders()
    native.decode(topic, key, value)  # the schema is known: truncations take the one-call path first
    oracle.decode(topic, key, value)
    for cut in range(0, len(value), 7):
        assert_same_outcome(native, oracle, topic, key, value[:cut])
        assert_same_outcome(native, oracle, topic, key[:cut], value)


@pytest.mark.parametrize(("field", "bad"), [
    ("last_price", "A6NSlEA"), ("last_price", "A6NS!EAA"), ("last_price", ""), ("last_price", 1.5), ("last_price", True),
    ("last_price", []), ("event_time", "2024-13-01T00:00:00Z"), ("event_time", "2024-01-01T00:00:00"), ("event_time", 5),
    ("trade_count", "x"), ("symbol", None),
])
def test_bad_values_raise_the_same_named_error(field, bad):
    topic, key, value = bench_record()
    document = orjson.loads(value)
    document["payload"]["after"][field] = bad
    mangled = orjson.dumps(document)
    native, oracle = decoders()
    native.decode(topic, key, value)
    assert_same_outcome(native, oracle, topic, key, mangled)


def test_a_missing_decimal_field_names_it_on_both_paths():
    topic, key, value = bench_record()
    document = orjson.loads(value)
    del document["payload"]["after"]["last_price"]
    native, oracle = decoders()
    outcome_native = outcome(native, topic, key, orjson.dumps(document))
    assert outcome_native == outcome(oracle, topic, key, orjson.dumps(document))
    assert "last_price: missing from the payload" in outcome_native[1]


@pytest.mark.parametrize("description", [
    ("nope", print), ("call",), ("call", 3), ("decimal", 2, None), ("decimal", 10 ** 7, None, print),
    ("struct", (("a",),), print), ("struct", (("a", None, 3),), print),
    ("struct", (("a", None, "x"), ("a", None, "x")), print),
    ("array", None, print), ("envelope", None, None), [], 5,
])
def test_a_bad_program_description_is_refused_not_crashed_on(description):
    with pytest.raises((ValueError, TypeError)):
        decoder_module._json_native.Program(description, UNAVAILABLE)


def test_known_schemas_refuse_what_is_not_a_program():
    known = decoder_module._json_native.KnownSchemas(orjson.loads, dict)
    with pytest.raises(TypeError):
        known.add(b"{}", "not a program", None)
    with pytest.raises(TypeError):
        known.add("text", None, None)
    assert known.decode("t", None, b'{"schema":{},"payload":{}}', None, 0, 0) is None
