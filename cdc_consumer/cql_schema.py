"""Cassandra edge of the mapping: what the target tables look like, and their prepared statements.

`describe_tables` reads system_schema into `TableSchema`s (what `mapping.compile_mapping` checks a mapping
against); `prepare_target` writes and prepares one target table's INSERT and DELETE and hands them back as
`TargetStatements`, which the compiler gives each `TargetWriter` at construction. So the mapping package
does no Cassandra I/O and builds no CQL text, and the sink binds a write through its target's statements.
Identifiers reaching CQL text are validated (`identifiers.validate_identifier`); values are bind markers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from cdc_consumer.cql_values import StatementBinder
from cdc_consumer.identifiers import validate_identifier


@dataclass(frozen=True)
class TableSchema:
    """What compile_mapping needs to know of a Cassandra table (from system_schema.columns)."""

    name: str
    types: dict[str, str]  # column -> CQL type
    partition_key: tuple[str, ...]
    clustering: tuple[str, ...] = ()

    @property
    def primary_key(self) -> tuple[str, ...]:
        return self.partition_key + self.clustering


def describe_tables(session, keyspace: str) -> dict[str, TableSchema]:
    """Every table of `keyspace` with its column types and key columns in key order."""
    keyspace = validate_identifier(keyspace, what="keyspace")
    rows = session.execute("SELECT table_name, column_name, kind, position, type FROM system_schema.columns "
                           "WHERE keyspace_name = %s", (keyspace,))
    columns: dict[str, list] = {}
    for row in rows:
        columns.setdefault(row.table_name, []).append(row)

    def key(rows_of_table, kind: str) -> tuple[str, ...]:
        return tuple(r.column_name for r in sorted((r for r in rows_of_table if r.kind == kind),
                                                   key=lambda r: r.position))

    return {table: TableSchema(table, {r.column_name: r.type for r in cols}, key(cols, "partition_key"),
                               key(cols, "clustering"))
            for table, cols in columns.items()}


@dataclass(frozen=True)
class TargetStatements:
    """One target table's prepared statements and their fast binders (cql_values.StatementBinder).

    insert: INSERT ... USING TIMESTAMP ?, bound with (values in column order..., timestamp);
    delete: DELETE ... USING TIMESTAMP ? WHERE key = ?, bound with (timestamp, key values...).
    """

    insert: Any
    delete: Any
    insert_binder: StatementBinder
    delete_binder: StatementBinder


Prepare = Callable[[str], Any]  # CQL text -> prepared statement, e.g. Session.prepare


def statements_for(table: str, columns: Sequence[str], primary_key: Sequence[str],
                   keyspace: str | None = None) -> tuple[str, str]:
    """INSERT and DELETE text of a target table (identifiers validated; values are bind markers)."""
    for name in (table, *columns, *primary_key):
        validate_identifier(name, what="Cassandra identifier")
    prefix = f"{validate_identifier(keyspace, what='keyspace')}." if keyspace else ""
    names = ", ".join(columns)
    markers = ", ".join("?" for _ in columns)
    where = " AND ".join(f"{k} = ?" for k in primary_key)
    return (f"INSERT INTO {prefix}{table} ({names}) VALUES ({markers}) USING TIMESTAMP ?",
            f"DELETE FROM {prefix}{table} USING TIMESTAMP ? WHERE {where}")


def prepare_target(prepare: Prepare, table: str, columns: Sequence[str], primary_key: Sequence[str],
                   keyspace: str | None = None) -> TargetStatements:
    """Prepare a target table's INSERT and DELETE (at start-up: a statement Cassandra refuses fails here)."""
    insert, delete = (prepare(cql) for cql in statements_for(table, columns, primary_key, keyspace))
    return TargetStatements(insert, delete, StatementBinder(insert), StatementBinder(delete))
