"""The YAML mapping: which Cassandra rows a change event of a source table becomes.

Two stages, both at start-up so a bad mapping is one clear error before any record is read:
  * `load_mapping` parses and checks the file (structure, identifiers, conversion names) into typed
    specs (no I/O besides reading the file);
  * `compile_mapping` checks the specs against the Cassandra tables (`describe_tables` reads
    system_schema) and prepares one INSERT and one DELETE per target table.
At run time `CompiledMapping.writes(event)` turns one event into `Write`s (values converted, key
columns checked), raising `UnmappableRecord` for a record that must go to the DLQ.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from cassandra.query import UNSET_VALUE

from cdc_consumer.conversions import (
    CONVERSIONS,
    DEFAULT_FOR_CQL_TYPE,
    Conversion,
    ConversionError,
    to_epoch_us,
)
from cdc_consumer.cql_values import StatementBinder
from cdc_consumer.events import UNAVAILABLE, ChangeEvent, Op
from cdc_consumer.identifiers import InvalidIdentifier, validate_identifier

try:  # the C loop of TargetWriter.upsert (setup.py builds it; without a compiler the Python loop runs)
    from cdc_consumer import _cql_native
except ImportError:  # pragma: no cover - depends on the build
    _cql_native = None

ON_DELETE = ("delete", "ignore")
NULLS_ON_CREATE = ("skip", "write")
_TOP_LEVEL_KEYS = {"version", "skip_tables", "tables", "anchors"}
_TABLE_KEYS = {"topics", "targets"}
_TARGET_KEYS = {"table", "columns", "on_delete", "nulls_on_create", "snapshot_version_from", "schema_evolution"}
SCHEMA_EVOLUTION = ("none", "add_columns")  # add_columns: new source columns become Cassandra columns


class MappingError(ValueError):
    """The mapping file or its fit with the Cassandra schema is wrong (start-up error, exit 2)."""


class UnmappableRecord(Exception):
    """One record cannot be turned into Cassandra rows; it goes to the DLQ with this reason."""


# ---------------------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class ColumnSpec:
    column: str  # Cassandra column
    sources: tuple[str, ...]  # source columns the conversion reads
    convert: str | None  # conversion name; None = the default for the column's CQL type


@dataclass(frozen=True)
class TargetSpec:
    table: str
    columns: tuple[ColumnSpec, ...]
    on_delete: str = "delete"
    nulls_on_create: str = "skip"
    # Source timestamp column that versions SNAPSHOT rows (op r): they all share one snapshot time, which
    # says nothing about which of them is newest; see CompiledMapping._snapshot_version.
    snapshot_version_from: str | None = None
    # none (default): a source column the mapping does not name is ignored (counted, logged once);
    # add_columns: it is added to this Cassandra table and written (cdc_consumer/evolution.py)
    schema_evolution: str = "none"


@dataclass(frozen=True)
class TableSpec:
    source_table: str  # `schema.table`
    topics: tuple[str, ...]  # globs; empty = any topic
    targets: tuple[TargetSpec, ...]

    def accepts_topic(self, topic: str) -> bool:
        return not self.topics or any(fnmatch.fnmatchcase(topic, glob) for glob in self.topics)


@dataclass(frozen=True)
class MappingSpec:
    tables: dict[str, TableSpec]
    skip_tables: frozenset[str] = frozenset()
    origin: str = "<mapping>"


def default_mapping_path() -> Path:
    return Path(str(resources.files("cdc_consumer") / "mapping.yaml"))


def load_mapping(path: str | Path | None = None) -> MappingSpec:
    """Read and check a mapping file (the packaged default when `path` is None)."""
    path = Path(path) if path is not None else default_mapping_path()
    try:
        with path.open("rb") as stream:
            text = stream.read(MAX_MAPPING_BYTES + 1)
        if len(text) > MAX_MAPPING_BYTES:
            raise MappingError(f"{path}: larger than {MAX_MAPPING_BYTES} bytes: not a mapping file")
        document = yaml.load(text.decode("utf-8"), Loader=_BoundedLoader)  # noqa: S506 - a SafeLoader
    except OSError as exc:
        raise MappingError(f"cannot read mapping {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise MappingError(f"{path}: not UTF-8 text (byte {exc.start})") from exc
    except yaml.YAMLError as exc:
        raise MappingError(f"{path}: not valid YAML: {str(exc)[:500]}") from exc
    except ValueError as exc:  # an integer beyond Python's digit limit
        raise MappingError(f"{path}: not valid YAML: {str(exc)[:200]}") from exc
    except RecursionError:
        raise MappingError(f"{path}: not valid YAML: nested too deeply") from None
    return parse_mapping(document, origin=str(path))


MAX_MAPPING_BYTES = 1 << 20  # the packaged mapping is 4 KB
MAX_MAPPING_NODES = 100_000  # YAML nodes once every alias is expanded (the packaged mapping: about 400)
MAX_REPORTED_PROBLEMS = 50


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader whose document may not expand, through aliases, beyond MAX_MAPPING_NODES nodes: an alias
    costs nothing to load, but every walk of the result (the checks below, each event's lookups) pays for
    each expansion, and nested aliases grow it exponentially ("billion laughs"). A recursive alias is
    refused too."""

    def get_single_node(self):
        node = super().get_single_node()
        if node is not None:
            _expanded_size(node, {}, set())
        return node


def _expanded_size(node: yaml.Node, sizes: dict[int, int], open_nodes: set[int]) -> int:
    """Nodes under `node` with every alias expanded (memoised per node, so this walk is linear)."""
    known = sizes.get(id(node))
    if known is not None:
        return known
    if id(node) in open_nodes:
        raise yaml.YAMLError(f"recursive alias at {node.start_mark}")
    open_nodes.add(id(node))
    size = 1
    if isinstance(node, yaml.SequenceNode):
        size += sum(_expanded_size(item, sizes, open_nodes) for item in node.value)
    elif isinstance(node, yaml.MappingNode):
        size += sum(_expanded_size(k, sizes, open_nodes) + _expanded_size(v, sizes, open_nodes) for k, v in node.value)
    open_nodes.discard(id(node))
    if size > MAX_MAPPING_NODES:
        raise yaml.YAMLError(f"more than {MAX_MAPPING_NODES} nodes once its aliases are expanded")
    sizes[id(node)] = size
    return size


def parse_mapping(document: Any, origin: str = "<mapping>") -> MappingSpec:
    problems: list[str] = []
    spec = _Parser(problems).mapping(document, origin)
    if problems:
        raise MappingError(f"{origin}: invalid mapping:\n  - " + "\n  - ".join(problems))
    return spec


class _Parser:
    """Collects every problem of a mapping document (so one start-up error lists them all)."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems

    def fail(self, where: str, message: str) -> None:
        if len(self.problems) < MAX_REPORTED_PROBLEMS:
            self.problems.append(f"{where}: {message}")
        elif len(self.problems) == MAX_REPORTED_PROBLEMS:
            self.problems.append("... (further problems not listed)")

    def identifier(self, where: str, name: Any, what: str) -> bool:
        try:
            validate_identifier(name, what=what)
            return True
        except InvalidIdentifier as exc:
            self.fail(where, str(exc))
            return False

    def keys(self, where: str, node: dict, allowed: set[str]) -> None:
        for key in sorted(set(node) - allowed, key=str):
            self.fail(where, f"unknown key {key!r:.60} (expected one of {', '.join(sorted(allowed))})")

    def qualified_table(self, where: str, name: Any) -> bool:
        parts = name.split(".") if isinstance(name, str) else [name]
        if len(parts) != 2:
            self.fail(where, f"source table {name!r:.60} must be written schema.table")
            return False
        valid = [self.identifier(where, part, "source table name part") for part in parts]  # report each
        return all(valid)

    def mapping(self, document: Any, origin: str) -> MappingSpec:
        if not isinstance(document, dict):
            self.fail("mapping", "must be a YAML mapping with a `tables` key")
            return MappingSpec({}, origin=origin)
        self.keys("mapping", document, _TOP_LEVEL_KEYS)
        if document.get("version", 1) != 1:
            self.fail("version", f"unsupported mapping version {document.get('version')!r:.60} (expected 1)")
        skip = document.get("skip_tables") or []
        if not isinstance(skip, list):
            self.fail("skip_tables", "must be a list of schema.table names")
            skip = []
        for name in skip:
            self.qualified_table("skip_tables", name)
        tables_node = document.get("tables")
        if not isinstance(tables_node, dict) or not tables_node:
            self.fail("tables", "must map at least one source table (schema.table) to its targets")
            tables_node = {}
        tables = {}
        for name, node in tables_node.items():
            where = f"tables.{str(name)[:60]}"
            if self.qualified_table(where, name):
                tables[name] = self.table(where, name, node)
        overlap = set(tables) & set(skip)
        if overlap:
            self.fail("skip_tables", f"{', '.join(sorted(overlap))} both mapped and skipped")
        return MappingSpec(tables, frozenset(str(s) for s in skip), origin)

    def table(self, where: str, name: str, node: Any) -> TableSpec:
        if not isinstance(node, dict):
            self.fail(where, "must be a mapping with `targets`")
            return TableSpec(name, (), ())
        self.keys(where, node, _TABLE_KEYS)
        topics = node.get("topics") or []
        topics = [topics] if isinstance(topics, str) else topics
        if not isinstance(topics, list) or not all(isinstance(t, str) and t for t in topics):
            self.fail(f"{where}.topics", "must be a topic glob or a list of globs")
            topics = []
        targets_node = node.get("targets")
        if not isinstance(targets_node, list) or not targets_node:
            self.fail(f"{where}.targets", "must be a non-empty list of target tables")
            targets_node = []
        targets = tuple(self.target(f"{where}.targets[{i}]", t) for i, t in enumerate(targets_node))
        seen = [t.table for t in targets]
        for table in {t for t in seen if seen.count(t) > 1}:
            self.fail(f"{where}.targets", f"table {table!r:.60} listed twice")
        return TableSpec(name, tuple(topics), targets)

    def target(self, where: str, node: Any) -> TargetSpec:
        if not isinstance(node, dict):
            self.fail(where, "must be a mapping with `table` and `columns`")
            return TargetSpec("?", ())
        self.keys(where, node, _TARGET_KEYS)
        table = node.get("table")
        self.identifier(f"{where}.table", table, "Cassandra table")
        on_delete = node.get("on_delete", "delete")
        if on_delete not in ON_DELETE:
            self.fail(f"{where}.on_delete", f"{on_delete!r:.60} is not one of {', '.join(ON_DELETE)}")
        nulls = node.get("nulls_on_create", "skip")
        if nulls not in NULLS_ON_CREATE:
            self.fail(f"{where}.nulls_on_create", f"{nulls!r:.60} is not one of {', '.join(NULLS_ON_CREATE)}")
        columns_node = node.get("columns")
        if not isinstance(columns_node, dict) or not columns_node:
            self.fail(f"{where}.columns", "must map Cassandra columns to source columns")
            columns_node = {}
        columns = tuple(self.column(f"{where}.columns.{str(c)[:60]}", c, spec) for c, spec in columns_node.items())
        version_from = node.get("snapshot_version_from")
        if version_from is not None:
            self.identifier(f"{where}.snapshot_version_from", version_from, "source column")
        evolution = node.get("schema_evolution", "none")
        if evolution not in SCHEMA_EVOLUTION:
            self.fail(f"{where}.schema_evolution", f"{evolution!r} is not one of {', '.join(SCHEMA_EVOLUTION)}")
        return TargetSpec(str(table), columns, on_delete, nulls, version_from, evolution)

    def column(self, where: str, column: Any, node: Any) -> ColumnSpec:
        self.identifier(where, column, "Cassandra column")
        if isinstance(node, str):
            node = {"from": node}
        if not isinstance(node, dict) or "from" not in node:
            self.fail(where, "must be a source column name or {from: ..., convert: ...}")
            return ColumnSpec(str(column), (), None)
        self.keys(where, node, {"from", "convert"})
        sources = node["from"] if isinstance(node["from"], list) else [node["from"]]
        for source in sources:
            self.identifier(f"{where}.from", source, "source column")
        convert = node.get("convert")
        if convert is not None:
            conversion = CONVERSIONS.get(convert)
            if conversion is None:
                self.fail(f"{where}.convert", f"unknown conversion {convert!r:.60} "
                                              f"(known: {', '.join(sorted(CONVERSIONS))})")
            elif conversion.arity != len(sources):
                self.fail(where, f"conversion {convert!r:.60} reads {conversion.arity} source column(s), "
                                 f"got {len(sources)}")
        elif len(sources) != 1:
            self.fail(where, "several source columns need a `convert` that combines them")
        return ColumnSpec(str(column), tuple(str(s) for s in sources), convert)


# ------------------------------------------------------------------------------ Cassandra side


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
    """A compiled target table: converts source rows and carries its prepared statements."""

    table: str
    columns: tuple[CompiledColumn, ...]
    primary_key: tuple[str, ...]
    partition_size: int
    on_delete: str
    nulls_on_create: str
    snapshot_version_from: str | None = None  # see TargetSpec.snapshot_version_from
    insert: Any = None  # prepared INSERT ... USING TIMESTAMP ?  (bind: values..., timestamp)
    delete: Any = None  # prepared DELETE ... USING TIMESTAMP ? WHERE key = ?  (bind: timestamp, key...)
    insert_binder: StatementBinder | None = None  # fast binding of the same statements (the sink's path)
    delete_binder: StatementBinder | None = None
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
        values = []
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
        self._by_source = {tuple(name.split(".")): table for name, table in tables.items()
                           if name.count(".") == 1 and all(name.split("."))}

    def is_skipped(self, event: ChangeEvent) -> bool:
        return event.table in self.spec.skip_tables

    def writes(self, event: ChangeEvent) -> list[Write]:
        """The row operations of a data-change event (op r/c/u/d); raises UnmappableRecord."""
        source = event.source
        table = self._table_for(event)
        if not event.typed:
            raise UnmappableRecord("record carries no Connect schema (schemas.enable=false): "
                                   "its decimals cannot be decoded exactly")
        ts_us = source.ts_us if source is not None and source.ts_us is not None else None
        if ts_us is None:
            raise UnmappableRecord("event has no source.ts_us to order its writes by")
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


def compile_mapping(spec: MappingSpec, schemas: dict[str, TableSchema],
                    prepare: Callable[[str], Any] | None = None, keyspace: str | None = None) -> CompiledMapping:
    """Check the specs against the Cassandra tables and prepare the statements (when `prepare` is given)."""
    problems: list[str] = []
    tables = {}
    for name, table in spec.tables.items():
        targets = []
        for index, target in enumerate(table.targets):
            where = f"tables.{name}.targets[{index}] ({target.table})"
            writer = _compile_target(where, target, schemas.get(target.table), problems)
            if writer is not None:
                targets.append(writer)
        tables[name] = CompiledTable(table, tuple(targets))
    if problems:
        raise MappingError(f"{spec.origin}: mapping does not fit the Cassandra schema"
                           f"{f' of keyspace {keyspace}' if keyspace else ''}:\n  - " + "\n  - ".join(problems))
    compiled = CompiledMapping(spec, tables)
    if prepare is not None:
        prefix = f"{validate_identifier(keyspace, what='keyspace')}." if keyspace else ""
        for writer in compiled.writers:
            writer.insert, writer.delete = (prepare(cql) for cql in statements_for(writer, prefix))
            writer.insert_binder, writer.delete_binder = StatementBinder(writer.insert), StatementBinder(writer.delete)
    return compiled


def statements_for(writer: TargetWriter, prefix: str = "") -> tuple[str, str]:
    """INSERT and DELETE text of a target (identifiers validated at load; values are bind markers)."""
    names = ", ".join(c.column for c in writer.columns)
    markers = ", ".join("?" for _ in writer.columns)
    where = " AND ".join(f"{k} = ?" for k in writer.primary_key)
    return (f"INSERT INTO {prefix}{writer.table} ({names}) VALUES ({markers}) USING TIMESTAMP ?",
            f"DELETE FROM {prefix}{writer.table} USING TIMESTAMP ? WHERE {where}")


def _compile_target(where: str, target: TargetSpec, schema: TableSchema | None,
                    problems: list[str]) -> TargetWriter | None:
    if schema is None:
        problems.append(f"{where}: Cassandra table {target.table!r:.60} does not exist")
        return None
    count = len(problems)
    columns = []
    for spec in target.columns:
        cql_type = schema.types.get(spec.column)
        if cql_type is None:
            problems.append(f"{where}: column {spec.column!r:.60} is not in Cassandra table {target.table}")
            continue
        name = spec.convert or DEFAULT_FOR_CQL_TYPE.get(cql_type)
        conversion = CONVERSIONS.get(name or "")
        if conversion is None:
            problems.append(f"{where}: column {spec.column} ({cql_type}) needs an explicit `convert`")
        elif cql_type not in conversion.cql_types:
            problems.append(f"{where}: conversion {name!r:.60} cannot feed {spec.column} of type {cql_type} "
                            f"(it feeds {', '.join(sorted(conversion.cql_types))})")
        else:
            columns.append(CompiledColumn(spec.column, spec.sources, conversion))
    mapped = {c.column for c in target.columns}
    missing = [k for k in schema.primary_key if k not in mapped]
    if missing:
        problems.append(f"{where}: key column(s) {', '.join(missing)} of {target.table} are not mapped")
    if len(problems) > count:
        return None
    return TargetWriter(target.table, tuple(columns), schema.primary_key, len(schema.partition_key),
                        target.on_delete, target.nulls_on_create, target.snapshot_version_from)

