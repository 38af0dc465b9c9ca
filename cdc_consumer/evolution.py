"""Source schema changes mid-stream: columns the mapping does not name.

Debezium carries every column of the source row, so after `ALTER TABLE ... ADD COLUMN` in PostgreSQL the
change events simply have one more field; the stream keeps flowing either way. What happens to it:

- default (`schema_evolution: none`): the column is ignored, logged once per source table and column
  (WARNING), and counted in `cdc_source_columns_ignored{table}`;
- `schema_evolution: add_columns` on a mapping target (opt-in, like the Debezium JDBC sink's
  `schema.evolution=basic`): the column is added to that Cassandra table with the type of its first
  non-null value — a numeric becomes `<name> double` for charts plus `<name>_exact decimal`, as the
  existing columns are; int -> bigint, text -> text, boolean, timestamp, date, bytea -> blob, uuid —
  and the mapping is recompiled so this event and every later one write it. Rows written before the
  column existed are not back-filled (`cdc snapshot --table ...` re-reads them if needed).

The check costs one dict lookup per event: it only runs when the number of columns in a table's
after-image differs from the last one checked. A restart re-discovers the column from the next event
(the Cassandra column already exists then, so only the mapping is extended again).
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from cdc_consumer.errors import FatalError, MappingError, describe_exception
from cdc_consumer.events import UNAVAILABLE, ChangeEvent
from cdc_consumer.identifiers import InvalidIdentifier, validate_identifier
from cdc_consumer.mapping import ColumnSpec, CompiledMapping, compile_mapping, describe_tables

log = logging.getLogger(__name__)

RECHECK = -1  # width of a table whose new column had only nulls so far: look again at the next event


def columns_for(name: str, value: Any) -> list[tuple[str, str, ColumnSpec]] | None:
    """(Cassandra column, CQL type, mapping column) for a new source column, from a decoded value."""
    if isinstance(value, Decimal):
        return [(name, "double", ColumnSpec(name, (name,), "double")),
                (f"{name}_exact", "decimal", ColumnSpec(f"{name}_exact", (name,), "decimal"))]
    for kind, cql_type in ((bool, "boolean"), (int, "bigint"), (float, "double"), (str, "text"),
                           (datetime, "timestamp"), (date, "date"), (bytes, "blob"), (uuid.UUID, "uuid")):
        if isinstance(value, kind):
            return [(name, cql_type, ColumnSpec(name, (name,), cql_type))]
    return None


class SchemaEvolution:
    def __init__(self, session, keyspace: str, mapping: CompiledMapping, metrics=None) -> None:
        self.session = session
        self.keyspace = keyspace
        self.mapping = mapping
        self.metrics = metrics
        self.widths: dict[str | None, int] = {}  # source table name -> after-image width last checked
        self.ignored: dict[str, set[str]] = {}
        self.added: dict[str, list[str]] = {}  # Cassandra table -> columns added by this process

    def check(self, event: ChangeEvent) -> CompiledMapping | None:
        """Look at the after-image's columns; a new mapping when columns were added, else None."""
        after = event.after or {}
        source_table = event.source.table if event.source else None
        self.widths[source_table] = len(after)
        table = event.table
        compiled = self.mapping.tables.get(table) if table is not None else None
        if table is None or compiled is None:
            return None
        referenced = {s for t in compiled.spec.targets for c in t.columns for s in c.sources}
        referenced.update(t.snapshot_version_from for t in compiled.spec.targets if t.snapshot_version_from)
        unknown = [c for c in after if c not in referenced and c not in self.ignored.get(table, ())]
        if not unknown:
            return None
        evolving = [t for t in compiled.spec.targets if t.schema_evolution == "add_columns"]
        new_columns: dict[str, list[tuple[str, str, ColumnSpec]]] = {}
        for column in unknown:
            value = after[column]
            if evolving and (value is None or value is UNAVAILABLE):
                self.widths[source_table] = RECHECK  # type unknown until a value arrives
                continue
            specs = columns_for(column, value) if evolving else None
            if specs is None:
                self._ignore(table, column, "no target has schema_evolution: add_columns" if not evolving
                             else f"no Cassandra type for a {type(value).__name__} value")
                continue
            new_columns[column] = specs
        return self._evolve(table, evolving, new_columns) if new_columns else None

    def _ignore(self, table: str, column: str, why: str) -> None:
        self.ignored.setdefault(table, set()).add(column)
        log.warning("source column %s of %s is not in the mapping and is ignored (%s)", column, table, why)
        if self.metrics is not None:
            self.metrics.columns_ignored.labels(table).set(len(self.ignored[table]))

    def _evolve(self, table: str, evolving, new_columns: dict[str, list]) -> CompiledMapping:
        try:
            existing = describe_tables(self.session, self.keyspace)
            for target in evolving:
                present = existing[target.table].types if target.table in existing else {}
                for specs in new_columns.values():
                    for column, cql_type, _ in specs:
                        if column not in present:
                            self._add_column(target.table, column, cql_type)
            spec = self._extended_spec(table, evolving, new_columns)
            mapping = compile_mapping(spec, describe_tables(self.session, self.keyspace), self.session.prepare,
                                      self.keyspace)
        except (MappingError, InvalidIdentifier) as exc:
            raise FatalError(f"schema evolution of {table} failed: {exc}", edge="cassandra",
                             reason="schema_evolution") from exc
        except Exception as exc:  # noqa: BLE001 - a failed ALTER stops the process; a restart tries again
            raise FatalError(f"schema evolution of {table} failed: {describe_exception(exc)}", edge="cassandra",
                             reason="schema_evolution") from exc
        self.mapping = mapping
        log.warning("schema evolution: source column(s) %s of %s now written to %s", ", ".join(new_columns), table,
                    ", ".join(t.table for t in evolving))
        return mapping

    def _add_column(self, table: str, column: str, cql_type: str) -> None:
        table = validate_identifier(table, what="Cassandra table")
        column = validate_identifier(column, what="Cassandra column")
        keyspace = validate_identifier(self.keyspace, what="keyspace")
        self.session.execute(f"ALTER TABLE {keyspace}.{table} ADD {column} {cql_type}", timeout=60)
        self.added.setdefault(table, []).append(column)
        log.warning("schema evolution: added column %s %s to Cassandra table %s.%s", column, cql_type, keyspace, table)

    def _extended_spec(self, table: str, evolving, new_columns: dict[str, list]):
        spec = self.mapping.spec
        table_spec = spec.tables[table]
        extra = tuple(column_spec for specs in new_columns.values() for _, _, column_spec in specs)
        targets = tuple(dataclasses.replace(t, columns=t.columns + extra) if t in evolving else t
                        for t in table_spec.targets)
        tables = {**spec.tables, table: dataclasses.replace(table_spec, targets=targets)}
        return dataclasses.replace(spec, tables=tables)
