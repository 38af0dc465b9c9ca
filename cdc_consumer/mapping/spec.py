"""Mapping stage 1: parse and check a mapping file into typed specs (no I/O besides reading the file).

`load_mapping` reads the YAML (bounded in size and in alias expansion) and `parse_mapping` checks its
structure, identifiers and conversion names, collecting every problem into one `MappingError` so a bad
mapping is one clear start-up error. The result, a `MappingSpec`, knows nothing of Cassandra: that is
`compile.py`'s job.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from cdc_consumer.conversions import CONVERSIONS
from cdc_consumer.errors import MappingError
from cdc_consumer.identifiers import InvalidIdentifier, validate_identifier

ON_DELETE = ("delete", "ignore")
NULLS_ON_CREATE = ("skip", "write")
_TOP_LEVEL_KEYS = {"version", "skip_tables", "tables", "anchors"}
_TABLE_KEYS = {"topics", "targets"}
_TARGET_KEYS = {"table", "columns", "on_delete", "nulls_on_create", "snapshot_version_from", "schema_evolution"}
SCHEMA_EVOLUTION = ("none", "add_columns")  # add_columns: new source columns become Cassandra columns


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
MAX_FLOW_DEPTH = 64  # nested [ ] / { } collections (the packaged mapping nests 2 deep)
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

    def fetch_flow_collection_start(self, TokenClass) -> None:
        """Refuse deep `[`/`{` nesting before it costs: PyYAML's scanner walks every open flow level for
        each token (`stale_possible_simple_keys`), so "[[[...]]]" costs the square of its depth — about
        100 s of CPU for a 1 MiB file of such blocks."""
        if self.flow_level >= MAX_FLOW_DEPTH:
            raise yaml.scanner.ScannerError(None, None, f"flow collections nested deeper than {MAX_FLOW_DEPTH}",
                                            self.get_mark())
        super().fetch_flow_collection_start(TokenClass)


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

