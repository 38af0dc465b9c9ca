"""Schema evolution (`cdc_consumer/evolution.py`): the Cassandra type a new source column gets, from the
values real Debezium sends for each PostgreSQL type, and a new column whose first value is NULL.

The expected types are literals, per PostgreSQL column of the fixtures' `type_zoo` table (tools/sql/schema.sql
in shared/fixtures/debezium); the values come from the real JSON and Avro captures, decoded.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

import pytest

from cdc_consumer.avro import AvroDecoder
from cdc_consumer.decoder import Decoder
from cdc_consumer.evolution import RECHECK, SchemaEvolution, columns_for
from cdc_consumer.mapping import TableSchema, compile_mapping, parse_mapping
from cdc_consumer.schema_registry import SchemaFile
from tests.unit.debezium_records import AVRO, PRECISE, avro_bytes, avro_schemas_path, records

# PostgreSQL type of the column -> the Cassandra columns schema evolution adds for it
TYPE_ZOO = {
    "num_var": [("num_var", "double"), ("num_var_exact", "decimal")],  # numeric (variable scale)
    "num_int": [("num_int", "double"), ("num_int_exact", "decimal")],  # numeric(10,0)
    "dbl": [("dbl", "double")],  # double precision
    "real_col": [("real_col", "double")],  # real
    "small_col": [("small_col", "bigint")],  # smallint
    "big_col": [("big_col", "bigint")],  # bigint
    "d": [("d", "date")],  # date
    "ts": [("ts", "timestamp")],  # timestamp
    "ts3": [("ts3", "timestamp")],  # timestamp(3)
    "tstz": [("tstz", "timestamp")],  # timestamptz
    "t": None,  # time: no Cassandra type is inferred; the column is ignored and counted
    "iv": None,  # interval
    "js": [("js", "text")],  # jsonb
    "jsn": [("jsn", "text")],  # json
    "flag": [("flag", "boolean")],  # boolean
    "u": [("u", "uuid")],  # uuid
    "label": [("label", "text")],  # text
    "vc": [("vc", "text")],  # varchar(32)
    "bin": [("bin", "blob")],  # bytea
    "tags": None,  # text[]
}
POPULATED, ALL_NULL = 5, 6  # lines of the captures: type_zoo id 1 (every type populated), id 2 (every column NULL)


def json_line(line: int):
    record = records(PRECISE)[line - 1]
    return Decoder().decode(record["topic"], record["key"], record["value"])


def avro_line(line: int):
    record = records(AVRO)[line - 1]
    return AvroDecoder(SchemaFile(avro_schemas_path())).decode(record["topic"], avro_bytes(record["key"]),
                                                               avro_bytes(record["value"]))


def inferred(name: str, value) -> list[tuple[str, str]] | None:
    specs = columns_for(name, value)
    return None if specs is None else [(column, cql_type) for column, cql_type, _ in specs]


@pytest.mark.parametrize("decode", [json_line, avro_line], ids=["json", "avro"])
def test_each_postgresql_type_of_the_real_captures_gets_its_cassandra_type(decode):
    after = decode(POPULATED).after
    assert set(after) == {"id", *TYPE_ZOO}
    assert {column: inferred(column, after[column]) for column in TYPE_ZOO} == TYPE_ZOO


@pytest.mark.parametrize(("value", "expected"), [
    (Decimal("-0.00000001"), [("x", "double"), ("x_exact", "decimal")]),
    (True, [("x", "boolean")]),  # a bool is an int to Python: it must not become a bigint
    (False, [("x", "boolean")]),
    (0, [("x", "bigint")]),
    (-2**63, [("x", "bigint")]),
    (1.5, [("x", "double")]),
    ("", [("x", "text")]),
    (datetime(2024, 2, 29, 12, 0, tzinfo=UTC), [("x", "timestamp")]),  # a datetime is a date to Python
    (date(2024, 2, 29), [("x", "date")]),
    (b"", [("x", "blob")]),
    (uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"), [("x", "uuid")]),
    (time(23, 59), None), (timedelta(seconds=1), None), (["a"], None), ({"a": 1}, None),
])
def test_a_decoded_value_gives_its_cassandra_columns(value, expected):
    assert inferred("x", value) == expected


def test_the_numeric_column_feeds_the_chart_double_and_the_exact_decimal_from_the_same_source():
    specs = columns_for("vwap", Decimal("1.5"))
    assert [(spec.column, spec.sources, spec.convert) for _, _, spec in specs] == [
        ("vwap", ("vwap",), "double"), ("vwap_exact", ("vwap",), "decimal")]


class NoSession:
    """Evolution must not touch Cassandra while it has nothing to add."""

    def __getattr__(self, name):
        raise AssertionError(f"session.{name} used")


def type_zoo_evolution(schema_evolution: str) -> SchemaEvolution:
    spec = parse_mapping({"tables": {"public.type_zoo": {"targets": [
        {"table": "type_zoo", "columns": {"id": "id"}, "schema_evolution": schema_evolution}]}}})
    mapping = compile_mapping(spec, {"type_zoo": TableSchema("type_zoo", {"id": "int"}, ("id",))})
    return SchemaEvolution(NoSession(), "ks", mapping)


def test_a_new_column_whose_first_value_is_null_waits_for_a_value_before_it_is_typed(caplog):
    evolution = type_zoo_evolution("add_columns")
    event = json_line(ALL_NULL)
    assert [c for c, v in event.after.items() if v is not None] == ["id"]
    with caplog.at_level(logging.WARNING, logger="cdc_consumer.evolution"):
        assert evolution.check(event) is None  # nothing added, nothing ignored: no type to go by yet
    assert evolution.widths == {"type_zoo": RECHECK}  # so the consumer checks the next event again
    assert evolution.ignored == {} and evolution.added == {} and caplog.records == []


def test_without_opt_in_a_new_column_is_ignored_and_logged_once_null_or_not(caplog):
    evolution = type_zoo_evolution("none")
    with caplog.at_level(logging.WARNING, logger="cdc_consumer.evolution"):
        assert evolution.check(json_line(ALL_NULL)) is None
        assert evolution.check(json_line(POPULATED)) is None
    assert evolution.widths == {"type_zoo": 21}
    assert evolution.ignored == {"public.type_zoo": set(TYPE_ZOO)}
    assert sorted(r.getMessage().split()[2] for r in caplog.records) == sorted(TYPE_ZOO)  # once per column
