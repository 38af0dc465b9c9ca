"""Hostile input (issue 15): the JSON and Avro decoders (both paths), `cdc decode` and the mapping loader give a
named error for anything they cannot hold, with time and memory per record bounded, and never crash.

Memory and output are checked without a clock: tracemalloc's peak while one record is decoded, and the size
the decoded values would have once printed (computed here from the values, not by render.py), each against a
generous multiple of the record's own size. Time is the CPU time of the decoding thread (`time.thread_time`),
not the wall clock: time spent waiting for a core on a loaded machine does not count, so the bound cannot
flake under load, and it is set so far above the work of one record (about 10**4 times) that a slower machine
or the sanitizers (`make sanitize`) stay far below it. What it catches is work that grows with a number the
input chooses (a scale, a length prefix, a nesting depth) without allocating.
"""

from __future__ import annotations

import base64
import io
import json
import struct
import time
import tracemalloc
from decimal import Decimal
from pathlib import Path

import fastavro
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from cdc_cli.cli import main
from cdc_consumer.avro import AvroDecoder, without_logical_types
from cdc_consumer.decoder import Decoder
from cdc_consumer.errors import DecodeError, InvalidAvro, InvalidJson, InvalidValue, MappingError, SchemaError
from cdc_consumer.mapping import load_mapping

DECIMAL = "org.apache.kafka.connect.data.Decimal"
VSD = "io.debezium.data.VariableScaleDecimal"
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))


# ------------------------------------------------------------------------------ the bounds

def memory_bound(record_size: int) -> int:
    """Peak bytes allocated while one record decodes: its schema compiled, its payload parsed and converted."""
    return 4_000_000 + 200 * record_size


def cpu_bound(record_size: int) -> float:
    """CPU seconds one record may take, tracemalloc's overhead included: a 300-byte record decodes in
    well under a millisecond."""
    return 2.0 + record_size / 100_000


def output_bound(record_size: int) -> int:
    """Characters its values may print as: a VariableScaleDecimal's 16383 digits after the point from a
    30-byte struct is the largest growth PostgreSQL itself can cause."""
    return 100_000 + 1000 * record_size


def printed_size(value) -> int:
    """Characters `value` takes printed exactly (decimals in plain notation), counted without printing it."""
    size, stack = 0, [value]
    while stack:
        item = stack.pop()
        if isinstance(item, Decimal):
            sign, digits, exponent = item.as_tuple()
            size += len(digits) + (abs(exponent) if isinstance(exponent, int) else 0) + 2
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
        elif isinstance(item, (str, bytes)):
            size += len(item)
        else:
            size += 32
    return size


def decode_bounded(decoder, topic: str, key: bytes | None, value: bytes | None, headers=None):
    """The event, or the DecodeError raised (anything else propagates and fails the test), within the bounds."""
    record_size = len(key or b"") + len(value or b"") + len(repr(headers))
    tracemalloc.start()
    started = time.thread_time()
    try:
        try:
            outcome = decoder.decode(topic, key, value, headers)
        except DecodeError as exc:
            outcome = exc
        cpu = time.thread_time() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= memory_bound(record_size), f"{peak} bytes allocated for a {record_size}-byte record"
    assert cpu <= cpu_bound(record_size), f"{cpu:.3f} CPU seconds for a {record_size}-byte record"
    if not isinstance(outcome, DecodeError):
        printed = printed_size([outcome.key, outcome.before, outcome.after])
        assert printed <= output_bound(record_size), f"{printed} characters out of a {record_size}-byte record"
    return outcome


def same_outcome(native, python, *, same_text: bool = True) -> None:
    """Both paths agree: the same error (class, and text unless the paths word it their own way), or both decode."""
    if isinstance(python, DecodeError) or isinstance(native, DecodeError):
        assert type(native) is type(python), (native, python)
        assert not same_text or str(native) == str(python)


# --------------------------------------------------------------------------------- JSON records

def json_record(field_schema: dict, value) -> bytes:
    """A change envelope whose `after` row has one field `x` of this Connect schema, holding `value`."""
    row = {"type": "struct", "optional": True, "fields": [dict(field_schema, field="x", optional=True)]}
    schema = {"type": "struct", "optional": False, "fields": [
        dict(row, field="before"), dict(row, field="after"), {"field": "op", "type": "string"}]}
    return json.dumps({"schema": schema, "payload": {"op": "c", "before": None, "after": {"x": value}}},
                      separators=(",", ":")).encode()


def json_decoders() -> tuple[Decoder, Decoder]:
    native = Decoder()
    assert native.native, "the C extension is not built: `make venv` compiles it"
    return native, Decoder(native=False)


def json_outcomes(value_bytes: bytes, key: bytes | None = None, headers=None):
    native, python = json_decoders()
    outcomes = [decode_bounded(decoder, "t", key, value_bytes, headers) for decoder in (native, python)]
    same_outcome(*outcomes)
    return outcomes


def decimal(scale, precision=None) -> dict:
    params = {"scale": str(scale)} | ({} if precision is None else {"connect.decimal.precision": str(precision)})
    return {"type": "bytes", "name": DECIMAL, "parameters": params}


VSD_SCHEMA = {"type": "struct", "name": VSD, "fields": [{"field": "scale", "type": "int32"},
                                                         {"field": "value", "type": "bytes"}]}


def test_decimal_scales_postgresql_cannot_have_are_invalid_value_and_its_extremes_still_decode_exactly():
    for schema in [decimal(1001), decimal(-1001), decimal(10 ** 9), decimal(-(10 ** 9)), decimal(10 ** 30),
                   decimal(2, precision=0), decimal(2, precision=1001), decimal(2, precision=-5)]:
        for outcome in json_outcomes(json_record(schema, "AQ==")):
            assert isinstance(outcome, InvalidValue) and "outside PostgreSQL" in str(outcome), (schema, outcome)
    for scale in [16384, -1, 10 ** 9, -(10 ** 9)]:
        for outcome in json_outcomes(json_record(VSD_SCHEMA, {"scale": scale, "value": "AQ=="})):
            assert isinstance(outcome, InvalidValue), (scale, outcome)
    for schema, value, expected in [(decimal(1000, precision=1000), "AQ==", Decimal("1E-1000")),
                                    (decimal(-1000), "/w==", Decimal("-1E+1000")),
                                    (VSD_SCHEMA, {"scale": 16383, "value": "Bw=="}, Decimal("7E-16383"))]:
        for outcome in json_outcomes(json_record(schema, value)):
            assert outcome.after["x"] == expected and str(outcome.after["x"]) == str(expected)


def test_more_digits_than_the_precision_allows_are_refused_before_they_are_computed():
    huge = base64.b64encode(b"\x01" + bytes(5000)).decode()  # about 12,000 digits
    for outcome in json_outcomes(json_record(decimal(2, precision=10), huge)):
        assert isinstance(outcome, InvalidValue) and "precision" in str(outcome)


def test_plain_fields_of_another_type_are_named_errors_never_converted_and_base64_is_strict():
    for connect_type, value in [("int64", "12"), ("int64", 1.5), ("int64", 2 ** 70), ("int64", 2 ** 63),
                                ("int64", True), ("int32", 2 ** 31), ("int16", -(2 ** 15) - 1), ("int8", 128),
                                ("string", 5), ("string", 1.5), ("string", ["a"]), ("boolean", 1),
                                ("boolean", "true"), ("bytes", "AQ==\n"), ("bytes", "AQ"), ("bytes", "A Q=="),
                                ("bytes", "AQ==AQ=="), ("bytes", "=AQ=")]:
        for outcome in json_outcomes(json_record({"type": connect_type}, value)):
            assert isinstance(outcome, InvalidValue), (connect_type, value, outcome)
            assert outcome.reason.startswith("after.x:")
    for name in ["io.debezium.time.MicroTimestamp", "io.debezium.time.Timestamp", "io.debezium.time.MicroDuration"]:
        for outcome in json_outcomes(json_record({"type": "int64", "name": name}, 1.5)):
            assert isinstance(outcome, InvalidValue), (name, outcome)
    for connect_type, value in [("int64", 2 ** 63 - 1), ("int64", -(2 ** 63)), ("int8", -128), ("string", "é"),
                                ("boolean", False), ("bytes", "AQ==")]:
        for outcome in json_outcomes(json_record({"type": connect_type}, value)):
            assert outcome.after["x"] == (b"\x01" if connect_type == "bytes" else value)
            assert type(outcome.after["x"]) is (bytes if connect_type == "bytes" else type(value))


@pytest.mark.parametrize("source", [{"ts_us": "1"}, {"ts_us": 1.5}, {"lsn": "29689288"}, {"txId": 2 ** 64},
                                    {"table": ["t"]}, {"db": 5}])
def test_source_fields_of_another_type_are_named_errors(source):
    document = json.loads(json_record({"type": "int64"}, 1))
    document["payload"]["source"] = source
    for outcome in json_outcomes(json.dumps(document).encode()):
        assert isinstance(outcome, InvalidValue), outcome


def test_schemas_nested_deeper_than_the_bound_are_a_schema_error_not_a_recursion():
    schema = {"type": "int64"}
    for _ in range(400):
        schema = {"type": "struct", "fields": [dict(schema, field="f")]}
    for outcome in json_outcomes(json_record(schema, None)):
        assert isinstance(outcome, SchemaError), outcome


@pytest.mark.parametrize("schema", [{"type": "bytes", "name": DECIMAL, "parameters": ["scale"]},
                                    {"type": "bytes", "name": {"a": 1}}, {"type": "int64", "name": ["x"]},
                                    {"type": "struct", "name": ["x"], "fields": []}])
def test_schemas_with_parameters_or_names_of_the_wrong_shape_are_a_schema_error(schema):
    for outcome in json_outcomes(json_record(schema, None)):
        assert isinstance(outcome, SchemaError), outcome


def test_a_primary_key_header_nested_too_deeply_is_invalid_json():
    headers = [("__debezium.newkey", b"[" * 100_000 + b"]" * 100_000)]
    native, python = json_decoders()
    for decoder in (native, python):
        event = decoder.decode("t", None, json_record({"type": "int64"}, 1), headers)
        with pytest.raises(InvalidJson):
            decoder.key_headers(event.headers)


@pytest.mark.parametrize("headers", [{"a": 1}, [("a",)], [(1, b"x")], [("a", 5)], 5])
def test_headers_of_the_wrong_shape_are_a_named_error(headers):
    for outcome in json_outcomes(json_record({"type": "int64"}, 1), headers=headers):
        assert isinstance(outcome, InvalidValue), outcome


CONNECT_TYPES = st.sampled_from(["int8", "int16", "int32", "int64", "float", "double", "boolean", "string", "bytes"])
SCALES = st.one_of(st.integers(-1100, 1100), st.integers(-(10 ** 12), 10 ** 12))
FIELD_SCHEMAS = st.recursive(
    st.one_of(CONNECT_TYPES.map(lambda kind: {"type": kind}),
              st.builds(decimal, SCALES, st.one_of(st.none(), st.integers(-5, 1100))),
              st.just(VSD_SCHEMA),
              st.sampled_from(["io.debezium.time.MicroTimestamp", "io.debezium.time.NanoTimestamp",
                               "io.debezium.time.Timestamp", "io.debezium.time.MicroTime"]).map(
                  lambda name: {"type": "int64", "name": name}),
              st.just({"type": "int32", "name": "io.debezium.time.Date"}),
              st.just({"type": "string", "name": "io.debezium.time.ZonedTimestamp"})),
    lambda inner: st.one_of(inner.map(lambda items: {"type": "array", "items": items}),
                            inner.map(lambda values: {"type": "map", "keys": {"type": "string"}, "values": values}),
                            inner.map(lambda field: {"type": "struct", "fields": [dict(field, field="f")]})),
    max_leaves=4)
JSON_LEAVES = st.one_of(
    st.none(), st.booleans(), st.integers(-(2 ** 80), 2 ** 80), st.floats(allow_nan=False), st.text(max_size=20),
    st.binary(max_size=40).map(lambda raw: base64.b64encode(raw).decode()),
    st.sampled_from(["NaN", "Infinity", "AQ==\n", "__debezium_unavailable_value", "2024-01-01T00:00:00Z"]),
    st.fixed_dictionaries({"scale": st.one_of(SCALES, st.text(max_size=3)),
                           "value": st.binary(min_size=1, max_size=20).map(lambda r: base64.b64encode(r).decode())}))
JSON_VALUES = st.recursive(JSON_LEAVES, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                                st.dictionaries(st.sampled_from(["f", "scale", "value"]),
                                                                                inner, max_size=3)), max_leaves=12)


@FUZZ
@given(FIELD_SCHEMAS, JSON_VALUES)
@example({"type": "bytes", "name": DECIMAL, "parameters": {"scale": "1000000000"}}, "AQ==")
@example(VSD_SCHEMA, {"scale": 10 ** 9, "value": "AQ=="})
@example({"type": "int64"}, "not a number")
def test_json_fuzz_only_named_errors_escape_and_every_record_is_bounded(schema, value):
    json_outcomes(json_record(schema, value))


@FUZZ
@given(st.binary(max_size=300))
@example(b'{"schema":{"type":"struct","fields":[{"field":"x","type":"int64"}]},"payload":{"x":"1"}}')
def test_json_fuzz_of_raw_bytes_as_key_and_value_gives_named_errors(raw):
    good = json_record({"type": "int64"}, 1)
    json_outcomes(raw, key=raw)
    json_outcomes(good, key=raw)


# --------------------------------------------------------------------------------- Avro records

class DictSource:
    def __init__(self, schemas: dict) -> None:
        self.schemas = schemas

    def schema(self, ref):
        return self.schemas[ref]


def avro_envelope(field_type) -> dict:
    row = {"type": "record", "name": "Value", "fields": [{"name": "x", "type": ["null", field_type]}]}
    return {"type": "record", "name": "Envelope", "namespace": "t", "fields": [
        {"name": "before", "type": ["null", row]}, {"name": "after", "type": ["null", "Value"]},
        {"name": "op", "type": "string"}]}


def avro_outcomes(schema: dict, body: bytes):
    value = b"\x00" + struct.pack(">I", 1) + body
    native = AvroDecoder(DictSource({1: schema}))
    assert native.native, "the C extension is not built: `make venv` compiles it"
    python = AvroDecoder(DictSource({1: schema}), native=False)
    outcomes = [decode_bounded(decoder, "t", None, value) for decoder in (native, python)]
    same_outcome(*outcomes, same_text=False)  # a malformed body: the extension names the byte, fastavro its error
    return outcomes


def avro_body(schema: dict, datum) -> bytes:
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(without_logical_types(schema)), datum)
    return body.getvalue()


def avro_decimal(scale, precision=None) -> dict:
    params = {"scale": str(scale)} | ({} if precision is None else {"connect.decimal.precision": str(precision)})
    return {"type": "bytes", "connect.name": DECIMAL, "connect.parameters": params}


AVRO_VSD = {"type": "record", "name": "VariableScaleDecimal", "namespace": "io.debezium.data",
            "connect.name": VSD, "fields": [{"name": "scale", "type": "int"}, {"name": "value", "type": "bytes"}]}


@pytest.mark.parametrize("field_type", [avro_decimal(10 ** 9), avro_decimal(-1001), avro_decimal(2, precision=1001),
                                        {"type": "bytes", "logicalType": "decimal", "scale": 5000, "precision": 10}])
def test_avro_decimal_scales_postgresql_cannot_have_are_invalid_value_on_both_paths(field_type):
    schema = avro_envelope(field_type)
    body = avro_body(schema, {"before": None, "after": {"x": b"\x01"}, "op": "c"})
    for outcome in avro_outcomes(schema, body):
        assert isinstance(outcome, InvalidValue), outcome


def test_avro_variable_scale_decimal_beyond_postgresql_is_invalid_value_on_both_paths():
    schema = avro_envelope(AVRO_VSD)
    body = avro_body(schema, {"before": None, "after": {"x": {"scale": 10 ** 9, "value": b"\x01"}}, "op": "c"})
    for outcome in avro_outcomes(schema, body):
        assert isinstance(outcome, InvalidValue), outcome


def test_avro_int16_beyond_its_range_is_a_named_error():
    schema = avro_envelope({"type": "int", "connect.type": "int16"})
    body = avro_body(schema, {"before": None, "after": {"x": 40_000}, "op": "c"})
    for outcome in avro_outcomes(schema, body):
        assert isinstance(outcome, InvalidValue), outcome


def varint(number: int) -> bytes:
    """Avro's zigzag varint."""
    zigzag, out = (number << 1) ^ (number >> 63), b""
    while zigzag > 0x7F:
        out, zigzag = out + bytes([zigzag & 0x7F | 0x80]), zigzag >> 7
    return out + bytes([zigzag])


def test_arrays_of_items_that_take_no_bytes_are_capped_per_record_not_per_array():
    """100 arrays of 500,000 nulls take 400 bytes: each array within the old per-array cap, 50 million
    list slots in all. The extension refuses the record; (the fastavro path, used only where the extension
    is not built, would read them all)."""
    schema = avro_envelope({"type": "array", "items": {"type": "array", "items": "null"}})
    body = (b"\x00" + b"\x02" + b"\x02" + varint(100) + (varint(500_000) + b"\x00") * 100 + b"\x00"
            + varint(1) + b"c")
    native = AvroDecoder(DictSource({1: schema}))
    outcome = decode_bounded(native, "t", None, b"\x00" + struct.pack(">I", 1) + body)
    assert isinstance(outcome, InvalidAvro) and "cannot fit" in str(outcome)


AVRO_FIELD_TYPES = st.one_of(
    st.sampled_from(["long", "int", "string", "bytes", "double", "float", "boolean"]),
    st.builds(avro_decimal, SCALES, st.one_of(st.none(), st.integers(-5, 1100))),
    st.just(AVRO_VSD),
    st.just({"type": "long", "connect.name": "io.debezium.time.MicroTimestamp"}),
    st.just({"type": "int", "connect.type": "int16"}),
    st.just({"type": "array", "items": "long"}),
    st.just({"type": "map", "values": "string"}))


@FUZZ
@given(AVRO_FIELD_TYPES, st.binary(max_size=60))
@example(avro_decimal(10 ** 9), b"\x00\x02\x02\x02\x02c")
def test_avro_fuzz_only_named_errors_escape_and_every_record_is_bounded(field_type, body):
    avro_outcomes(avro_envelope(field_type), body)


# ------------------------------------------------------------------------------------ cdc decode

def test_decode_lines_of_the_wrong_shape_give_an_error_line_each_and_decoding_carries_on():
    good = json.dumps({"topic": "t", "key": None, "value": json_record({"type": "int64"}, 7).decode()})
    bad = [{"topic": "t", "value": "{}", "headers": {"a": "b"}}, {"topic": "t", "value": "{}", "headers": 5},
           {"topic": "t", "value": "{}", "headers": [["a"]]}, {"topic": "t", "value": "{}", "headers": [[1, "x"]]},
           {"topic": "t", "key": {"a": 1}, "value": "{}"}, {"topic": "t", "value": ["x"]},
           {"topic": "t", "value": "{}", "partition": "p"}, {"topic": "t", "value": "{}", "offset": [1]}]
    stdin = "\n".join([line for entry in bad for line in (json.dumps(entry), good)]) + "\n"
    result = CliRunner().invoke(main, ["decode", "--input", "-"], input=stdin)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == 1
    docs = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(docs) == 2 * len(bad)
    for number, (error, decoded) in enumerate(zip(docs[::2], docs[1::2])):
        assert error["error"].startswith(f"line {2 * number + 1}: "), error
        assert decoded["after"] == {"x": 7}


def test_decode_prints_an_error_line_for_a_schemaless_record_too_deep_to_print():
    deep = "[" * 1000 + "]" * 1000
    value = '{"schema":null,"payload":{"op":"c","after":{"a":' + deep + "}}}"
    lines = [json.dumps({"topic": "t", "value": value}),
             json.dumps({"topic": "t", "value": value.replace(deep, "1")})]
    result = CliRunner().invoke(main, ["decode", "--input", "-"], input="\n".join(lines) + "\n")
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    first, second = (json.loads(line) for line in result.stdout.splitlines())
    assert "error" in first and second["after"] == {"a": 1}


# ------------------------------------------------------------------------------------- mapping

MAPPING = Path(__file__).resolve().parents[2] / "cdc_consumer" / "mapping.yaml"


def load_bounded(tmp_path: Path, text: str):
    """load_mapping of `text`: a MappingSpec or the MappingError raised, with bounded memory, CPU time and message."""
    path = tmp_path / "mapping.yaml"
    path.write_text(text, encoding="utf-8")
    tracemalloc.start()
    started = time.thread_time()
    try:
        try:
            outcome = load_mapping(path)
        except MappingError as exc:
            outcome = exc
        cpu = time.thread_time() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= 8_000_000 + 100 * len(text), f"{peak} bytes allocated for a {len(text)}-character mapping"
    assert cpu <= 4.0 + len(text) / 10_000, f"{cpu:.3f} CPU seconds for a {len(text)}-character mapping"
    if isinstance(outcome, MappingError):
        assert len(str(outcome)) <= 4000 + len(str(path)), "the error repeats the file's values"
    return outcome


def laughs(levels: int, where: str) -> str:
    """A mapping whose `where` value expands, through nested aliases, to 10**levels strings."""
    anchors = ["  l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    anchors += [f"  l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, levels)]
    return ("anchors:\n" + "\n".join(anchors) + "\ntables:\n  public.t:\n    targets:\n      - table: t\n"
            f"        columns: {{a: a}}\n        {where}: *l{levels - 1}\n")


def test_yaml_aliases_that_expand_without_bound_are_refused(tmp_path):
    outcome = load_bounded(tmp_path, laughs(7, "on_delete"))
    assert isinstance(outcome, MappingError) and "aliases" in str(outcome)


def test_a_recursive_alias_is_refused_and_the_packaged_mapping_with_its_aliases_still_loads(tmp_path):
    packaged = MAPPING.read_text(encoding="utf-8")
    spec = load_bounded(tmp_path, packaged)
    assert not isinstance(spec, MappingError) and "public.ticker_24h" in spec.tables
    head, anchors_line, rest = packaged.partition("\nanchors:")
    anchors_line += rest[:rest.index("\n") + 1] + "  loop: &loop [*loop]\n"
    recursive = head + anchors_line + rest[rest.index("\n") + 1:]
    assert recursive != packaged
    outcome = load_bounded(tmp_path, recursive)
    assert isinstance(outcome, MappingError) and "recursive" in str(outcome)


@pytest.mark.parametrize("text", [
    "tables:\n  public.t:\n    targets:\n      - table: t\n        columns: {a: a}\n        on_delete: %s\n",
    "tables:\n  %s.t:\n    targets: []\n", "version: %s\ntables: {}\n", "tables:\n  public.t:\n    %s: 1\n"])
def test_mapping_errors_quote_only_a_short_prefix_of_a_value(tmp_path, text):
    outcome = load_bounded(tmp_path, text % ("x" * 20_000))
    assert isinstance(outcome, MappingError) and "x" * 100 not in str(outcome)


def test_a_mapping_nested_too_deeply_is_a_mapping_error(tmp_path):
    outcome = load_bounded(tmp_path, "tables: " + "[" * 5000 + "]" * 5000 + "\n")
    assert isinstance(outcome, MappingError)


def test_deep_flow_nesting_is_refused_before_it_costs_the_square_of_its_depth(tmp_path):
    block = "[" * 450 + "]" * 450  # just within the recursion limit, which alone would refuse it only after the cost
    outcome = load_bounded(tmp_path, "tables: [" + ", ".join([block] * 20) + "]\n")
    assert isinstance(outcome, MappingError) and "nested deeper than 64" in str(outcome)
    assert len(str(outcome)) < 1000


YAML_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=30),
                         st.sampled_from(["public.t", "t", "delete", "decimal", "from", "convert", "targets",
                                          "columns", "table", "topics"]))
YAML_DOCUMENTS = st.recursive(YAML_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.one_of(st.text(max_size=10), YAML_SCALARS.filter(
        lambda key: key is not None)), inner, max_size=4)), max_leaves=20)


@FUZZ
@given(YAML_DOCUMENTS, st.integers(0, 3), st.text(max_size=40))
@example({"tables": {"public.t": {"targets": [{"table": "t", "columns": {"a": "a"}, "on_delete": "x"}]}}}, 0, "")
def test_mapping_fuzz_only_mapping_errors_escape_and_loading_is_bounded(tmp_path_factory, document, cut, noise):
    import yaml

    text = yaml.safe_dump({"tables": document} if cut == 0 else document)
    if cut == 2:  # a mangled file: noise spliced into the middle
        text = text[: len(text) // 2] + noise + text[len(text) // 2:]
    if cut == 3:
        text = laughs(6, "topics") + text
    load_bounded(tmp_path_factory.mktemp("mapping"), text)
