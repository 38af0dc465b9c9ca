"""Schema evolution of every PostgreSQL type on the real Cassandra (issue 14): `schema_evolution:
add_columns` adds each new column of the fixtures' `type_zoo` row with its type, and the row's values are
written to them and read back.

The events are the real Debezium capture (type_zoo id 2: every column NULL, then id 1: every type
populated); the expected types and values are literals from the capture's SQL
(shared/fixtures/debezium/tools/sql/schema.sql).
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal

import pytest

from cdc_consumer.decoder import Decoder
from cdc_consumer.evolution import RECHECK, SchemaEvolution
from cdc_consumer.mapping import compile_mapping, describe_tables, parse_mapping
from cdc_consumer.sink import CassandraSink
from tests.support import wait_until
from tests.unit.debezium_records import PRECISE, records

pytestmark = pytest.mark.integration
POPULATED, ALL_NULL = 5, 6  # lines of the capture

EVOLVED_TYPES = {
    "id": "int", "num_var": "double", "num_var_exact": "decimal", "num_int": "double", "num_int_exact": "decimal",
    "dbl": "double", "real_col": "double", "small_col": "bigint", "big_col": "bigint", "d": "date",
    "ts": "timestamp", "ts3": "timestamp", "tstz": "timestamp", "js": "text", "jsn": "text", "flag": "boolean",
    "u": "uuid", "label": "text", "vc": "text", "bin": "blob",
}  # t (time), iv (interval) and tags (text[]) have no inferred type: ignored
STORED = {  # row 1 of type_zoo as Cassandra returns it (timestamps in UTC, to the millisecond)
    "id": 1, "num_var": 3.14159, "num_var_exact": Decimal("3.14159"), "num_int": 42.0, "num_int_exact": Decimal("42"),
    "dbl": 1.5, "real_col": 2.25, "small_col": 7, "big_col": 9007199254740993, "d": date(2024, 2, 29),
    "ts": datetime(2024, 2, 29, 12, 34, 56, 789000), "ts3": datetime(2024, 2, 29, 12, 34, 56, 789000),
    "tstz": datetime(2024, 2, 29, 7, 4, 56, 789000), "js": '{"a": 1, "b": [true, null], "c": "x"}',
    "jsn": '{"k":  "v"}', "flag": True, "u": uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
    "label": 'Ünïcödé ✓ 日本語 🚀 "quoted" \\ backslash', "vc": "varchar", "bin": bytes.fromhex("deadbeef00ff"),
}


def decoded(line: int):
    record = records(PRECISE)[line - 1]
    return Decoder().decode(record["topic"], record["key"], record["value"])


def write(session, mapping, event) -> None:
    sink = CassandraSink(session)
    sink.add("row", mapping.writes(event))
    sink.flush()
    released, rejected = [], []
    wait_until(lambda: (released.extend(sink.poll(0.1)), rejected.extend(sink.rejected())) and (released or rejected),
               timeout=30, what="the write to be settled")
    assert (released, rejected) == (["row"], [])


def test_add_columns_types_every_new_column_once_it_has_a_value_and_writes_it(cassandra_session):
    session, keyspace = cassandra_session, cassandra_session.keyspace
    session.execute("CREATE TABLE type_zoo (id int PRIMARY KEY)")
    spec = parse_mapping({"tables": {"public.type_zoo": {"targets": [
        {"table": "type_zoo", "columns": {"id": "id"}, "schema_evolution": "add_columns"}]}}})
    mapping = compile_mapping(spec, describe_tables(session, keyspace), session.prepare, keyspace)
    evolution = SchemaEvolution(session, keyspace, mapping)

    assert evolution.check(decoded(ALL_NULL)) is None  # every new column NULL: nothing to type yet
    assert evolution.widths == {"type_zoo": RECHECK}
    assert describe_tables(session, keyspace)["type_zoo"].types == {"id": "int"}

    populated = decoded(POPULATED)
    evolved = evolution.check(populated)
    assert evolved is not None
    assert describe_tables(session, keyspace)["type_zoo"].types == EVOLVED_TYPES
    assert sorted(evolution.added["type_zoo"]) == sorted(set(EVOLVED_TYPES) - {"id"})
    assert evolution.ignored == {"public.type_zoo": {"t", "iv", "tags"}}

    write(session, evolved, populated)
    row = session.execute("SELECT * FROM type_zoo WHERE id = 1").one()._asdict()
    assert row == STORED
    assert str(row["num_var_exact"]) == "3.14159" and str(row["num_int_exact"]) == "42"  # digit for digit
