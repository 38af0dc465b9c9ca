"""Mapping stage 3, the run time: one change event -> the Cassandra row operations (`Write`s) it becomes.

`CompiledMapping.writes(event)` finds the event's source table and asks each of its `TargetWriter`s for
a `Write` (values converted, key columns checked), raising `UnmappableRecord` for a record that must go
to the DLQ. A `TargetWriter` is built whole by `compile.py`: its columns, key, and the prepared
statements of its table (`cql_schema.TargetStatements`, from the CQL edge) are given at construction.
The per-row conversion loop runs in C (`_cql_native.Converter`) when the extension is built, with
`TargetWriter.upsert_python` as its Python twin and oracle.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cassandra.query import UNSET_VALUE

from cdc_consumer.conversions import CONVERSIONS, Conversion, to_epoch_us
from cdc_consumer.cql_schema import TargetStatements
from cdc_consumer.errors import ConversionError, UnmappableRecord
from cdc_consumer.events import UNAVAILABLE, ChangeEvent, Op
from cdc_consumer.mapping.spec import MappingSpec, TableSpec

try:  # the C loop of TargetWriter.upsert (setup.py builds it; without a compiler the Python loop runs)
    import cdc_consumer._cql_native as _cql_native
except ImportError:  # pragma: no cover - depends on the build
    _cql_native = None


@dataclass(frozen=True)
class CompiledColumn:
    column: str
    sources: tuple[str, ...]
    conversion: Conversion


@dataclass(slots=True)
class Write:
    """One Cassandra row operation: an upsert (values aligned with target.columns) or a delete."""

    target: TargetWriter
    key: tuple  # primary-key values, in target.primary_key order
    values: list | None  # None for a delete; UNSET_VALUE leaves a column untouched
    timestamp: int  # USING TIMESTAMP, µs (source commit time)
    order: tuple  # newest wins when several writes hit one row in a flush: (ts_us, lsn)

    @property
    def is_delete(self) -> bool:
        return self.values is None

    @property
    def partition(self) -> tuple:
        return self.key[: self.target.partition_size]


if _cql_native is not None:  # the C Converter fills Write's slots itself: fail the import if they differ
    _cql_native.check_write(Write)


@dataclass
class TargetWriter:
    """A compiled target table: converts source rows into Writes; carries its prepared statements."""

    table: str
    columns: tuple[CompiledColumn, ...]
    primary_key: tuple[str, ...]
    partition_size: int
    on_delete: str
    nulls_on_create: str
    snapshot_version_from: str | None = None  # see TargetSpec.snapshot_version_from
    # the prepared INSERT/DELETE of this table (None when compiled without a session, e.g. to check a file)
    statements: TargetStatements | None = None
    key_columns: tuple[CompiledColumn, ...] = field(init=False)
    key_positions: tuple[int, ...] = field(init=False)
    _plan: tuple = field(init=False, repr=False)
    # upsert after the null of the row is chosen: (row, null, timestamp, order) -> Write. The C loop
    # (_cql_native.Converter of the same columns) when the extension is built, else upsert_python.
    _upsert: Callable[[dict[str, Any], Any, int, tuple], Write] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_name = {c.column: i for i, c in enumerate(self.columns)}
        self.key_positions = tuple(by_name[k] for k in self.primary_key)
        self.key_columns = tuple(self.columns[i] for i in self.key_positions)
        self._plan = tuple((c, c.sources[0] if len(c.sources) == 1 else None, c.conversion.convert)
                           for c in self.columns)
        self._upsert = native_converter(self) if _cql_native is not None else self.upsert_python

    def upsert(self, row: dict[str, Any], *, create: bool, timestamp: int, order: tuple) -> Write:
        return self._upsert(row, UNSET_VALUE if create and self.nulls_on_create == "skip" else None, timestamp, order)

    def upsert_python(self, row: dict[str, Any], null: Any, timestamp: int, order: tuple) -> Write:
        """upsert's loop in Python: the path without the C extension, and the oracle its tests compare with."""
        values: list[Any] = []
        append = values.append
        for column, source, convert in self._plan:  # one pass, no per-column calls
            if source is None:  # several source columns
                append(self._value(column, row, null is UNSET_VALUE))
                continue
            value = row.get(source, UNSET_VALUE)  # a column the source table lacks: leave it alone
            if value is None:
                append(null)
            elif value is UNSET_VALUE or value is UNAVAILABLE:  # unchanged TOAST value: keep the stored one
                append(UNSET_VALUE)
            else:
                try:
                    append(convert(value))
                except ConversionError as exc:
                    raise self._unmappable(column, exc) from exc
        key = tuple(values[i] for i in self.key_positions)
        self._check_key(key, "row")
        return Write(self, key, values, timestamp, order)

    def delete_of(self, row: dict[str, Any], *, timestamp: int, order: tuple) -> Write:
        key = tuple(self._value(c, row, False) for c in self.key_columns)
        self._check_key(key, "before-image of the delete")
        return Write(self, key, None, timestamp, order)

    def key_of(self, row: dict[str, Any]) -> tuple | None:
        """The target key a row maps to, or None when the row lacks a key column."""
        key = tuple(self._value(c, row, False) for c in self.key_columns)
        return None if any(v is None or v is UNSET_VALUE for v in key) else key

    def _value(self, column: CompiledColumn, row: dict[str, Any], skip_nulls: bool) -> Any:
        raw = []
        for source in column.sources:
            if source not in row:
                return UNSET_VALUE  # the source table has no such column: leave it alone
            value = row[source]
            if value is UNAVAILABLE:
                return UNSET_VALUE  # unchanged TOASTed column: keep the stored value
            raw.append(value)
        if raw[0] is None and column.conversion.arity == 1:
            return UNSET_VALUE if skip_nulls else None
        try:
            return column.conversion.convert(*raw)
        except ConversionError as exc:
            raise self._unmappable(column, exc) from exc

    def _conversion_failed(self, index: int, exc: ConversionError) -> None:
        """The native loop's ConversionError in column `index`: the Python loop's UnmappableRecord."""
        raise self._unmappable(self.columns[index], exc) from exc

    def _value_at(self, index: int, row: dict[str, Any], skip_nulls: bool) -> Any:
        return self._value(self.columns[index], row, skip_nulls)

    def _bad_key(self, values: list) -> None:
        self._check_key(tuple(values[i] for i in self.key_positions), "row")

    def _unmappable(self, column: CompiledColumn, exc: ConversionError) -> UnmappableRecord:
        return UnmappableRecord(f"{self.table}.{column.column} <- {', '.join(column.sources)}: {exc}")

    def _check_key(self, key: tuple, what: str) -> None:
        for column, value in zip(self.key_columns, key):
            if value is None or value is UNSET_VALUE:
                hint = (" (a delete's before-image carries only the source key under REPLICA IDENTITY DEFAULT; "
                        "set REPLICA IDENTITY FULL on the source table)") if what.startswith("before") else ""
                raise UnmappableRecord(f"{self.table}: key column {column.column} needs "
                                       f"{', '.join(column.sources)}, which is missing or null in the {what}{hint}")


def native_converter(writer: TargetWriter):
    """The C loop of writer.upsert: each column's conversion as a native kind where the conversion is one
    of CONVERSIONS (the C code converts only the values whose result is certain and calls `convert` for
    the rest), the plain call otherwise."""
    kinds = _cql_native.CONVERSION_KINDS

    def kind(conversion: Conversion) -> int:
        known = CONVERSIONS.get(conversion.name)
        return kinds.get(conversion.name, 0) if known is not None and known.convert is conversion.convert else 0

    plan = tuple((kind(c.conversion), c.sources, c.conversion.convert, c.conversion.arity) for c in writer.columns)
    return _cql_native.Converter(plan, writer.key_positions, writer._conversion_failed, writer._value_at,
                                 writer._bad_key, writer.upsert_python, Write, writer)


@dataclass
class CompiledTable:
    spec: TableSpec
    targets: tuple[TargetWriter, ...]


class CompiledMapping:
    """Run-time view of the mapping: event -> Writes."""

    def __init__(self, spec: MappingSpec, tables: dict[str, CompiledTable]) -> None:
        self.spec = spec
        self.tables = tables
        self.writers = tuple(w for t in tables.values() for w in t.targets)
        # (schema, table) of the source -> its table: found per event without building `schema.table`
        # (names that do not split into exactly two parts are looked up by event.table)
        self._by_source: dict[tuple[str | None, str | None], CompiledTable] = {}
        for name, table in tables.items():
            schema, _, table_name = name.partition(".")
            if schema and table_name and "." not in table_name:
                self._by_source[(schema, table_name)] = table

    def is_skipped(self, event: ChangeEvent) -> bool:
        return event.table in self.spec.skip_tables

    def writes(self, event: ChangeEvent) -> list[Write]:
        """The row operations of a data-change event (op r/c/u/d); raises UnmappableRecord."""
        source = event.source
        table = self._table_for(event)
        if not event.typed:
            raise UnmappableRecord("record carries no Connect schema (schemas.enable=false): "
                                   "its decimals cannot be decoded exactly")
        if source is None or source.ts_us is None:
            raise UnmappableRecord("event has no source.ts_us to order its writes by")
        ts_us = source.ts_us
        order = (ts_us, source.lsn or 0)
        op = event.op
        if op is Op.DELETE:
            row = {**(event.key or {}), **{k: v for k, v in (event.before or {}).items() if v is not None}}
            return [t.delete_of(row, timestamp=ts_us, order=order)
                    for t in table.targets if t.on_delete == "delete"]
        after = event.after
        if after is None:
            raise UnmappableRecord(f"op {op.value if op else None!r:.60} event without an after-image")
        create = op in (Op.CREATE, Op.READ)
        writes = []
        for target in table.targets:  # target.upsert's work, inlined (the hot path)
            null = UNSET_VALUE if create and target.nulls_on_create == "skip" else None
            if target.snapshot_version_from is not None and op is Op.READ:
                version = self._snapshot_version(target, after, ts_us)
                writes.append(target._upsert(after, null, version, (version, source.lsn or 0)))
                continue
            if op is Op.UPDATE and event.before and target.on_delete == "delete":
                writes.extend(self._moved_row(target, event.before, after, ts_us, order))
            writes.append(target._upsert(after, null, ts_us, order))
        return writes

    @staticmethod
    def _snapshot_version(target: TargetWriter, row: dict, snapshot_ts_us: int) -> int:
        """Write timestamp of a snapshot row on a target where many source rows share one target row.

        The row's own time (e.g. a ticker's event time), capped just below the snapshot time: the newest
        snapshot row wins among them, and none beats a change streamed after the snapshot started.
        """
        column = target.snapshot_version_from
        try:
            return min(to_epoch_us(row.get(column)), snapshot_ts_us - 1)
        except ConversionError as exc:
            raise UnmappableRecord(f"{target.table}: snapshot_version_from column {column}: {exc}") from exc

    @staticmethod
    def _moved_row(target: TargetWriter, before: dict, after: dict, ts_us: int, order: tuple) -> list[Write]:
        """With a full before-image, an update that changes a column the target key derives from moves the row."""
        old_key = target.key_of(before)
        if old_key is None or old_key == target.key_of(after):
            return []
        return [target.delete_of(before, timestamp=ts_us, order=order)]

    def _table_for(self, event: ChangeEvent) -> CompiledTable:
        source = event.source
        table = self._by_source.get((source.schema, source.table)) if source is not None else None
        if table is None:
            table = self.tables.get(event.table or "")
            if table is None:
                raise UnmappableRecord(f"no mapping for source table {event.table!r:.60}")
        if not table.spec.accepts_topic(event.topic):
            raise UnmappableRecord(f"topic {event.topic!r:.60} is not among {', '.join(table.spec.topics)} "
                                   f"mapped for {event.table}")
        return table

