"""Reading the project's read queries: Grafana dashboards (grafana/dashboards) and the cqlsh query book
(cql/queries.cql), and the rules every one of them keeps.

- `render_grafana_query` substitutes a panel query exactly as Grafana plus the HadesArchitect Cassandra
  datasource do: Grafana's template service replaces `$var`, `${var}` and `${var:format}` (with the
  datasource's scoped `__timeFrom`/`__timeTo`), then the plugin's backend replaces `$__timeFrom` /
  `$__timeTo` with the range in epoch MILLISECONDS (`time.UnixMilli()`) and `$__unixEpochFrom` /
  `$__unixEpochTo` in epoch seconds — bare integer literals, which CQL accepts for a timestamp.
- `key_read_problems` checks a SELECT reads partitions by key (every partition key column by = or IN) and
  clustering columns as a prefix, so Cassandra never needs ALLOW FILTERING.
- `column_type_problems` checks result columns are types the datasource can turn into Grafana fields.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cassandra import cqltypes

from cdc_consumer.mapping import TableSchema

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "grafana"
DASHBOARDS = GRAFANA / "dashboards"
QUERY_BOOK = ROOT / "cql" / "queries.cql"
CASSANDRA_PLUGIN = "hadesarchitect-cassandra-datasource"

# ------------------------------------------------------------------------------------------ dashboards


@dataclass(frozen=True)
class PanelQuery:
    dashboard: str  # file stem
    panel: str
    ref_id: str
    datasource: dict
    target: dict

    @property
    def id(self) -> str:
        return f"{self.dashboard}:{self.panel}:{self.ref_id}"


def load_dashboards(directory: Path = DASHBOARDS) -> dict[str, dict]:
    return {path.stem: json.loads(path.read_text(encoding="utf-8")) for path in sorted(directory.glob("*.json"))}


def iter_panels(dashboard: dict) -> Iterator[dict]:
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])  # collapsed rows hold their panels


def panel_queries(dashboards: Mapping[str, dict]) -> list[PanelQuery]:
    queries = []
    for name, dashboard in dashboards.items():
        for panel in iter_panels(dashboard):
            for target in panel.get("targets", []):
                datasource = target.get("datasource") or panel.get("datasource") or {}
                queries.append(PanelQuery(name, panel.get("title", "?"), target.get("refId", "?"), datasource,
                                          target))
    return queries


def cassandra_queries(dashboards: Mapping[str, dict]) -> list[PanelQuery]:
    return [q for q in panel_queries(dashboards) if q.datasource.get("type") == CASSANDRA_PLUGIN]


def variables(dashboard: dict) -> dict[str, dict]:
    return {v["name"]: v for v in dashboard.get("templating", {}).get("list", [])}


# ------------------------------------------------------------------------------ Grafana substitution

# Grafana's variable syntaxes: $name, ${name}, ${name:format}, [[name]] (deprecated).
_VARIABLE = re.compile(r"\$(?P<plain>\w+)|\$\{(?P<braced>\w+)(?::(?P<format>[^}]+))?\}|\[\[(?P<old>\w+)\]\]")
TIME_MACROS = ("__timeFrom", "__timeTo", "__unixEpochFrom", "__unixEpochTo")


class RenderError(ValueError):
    """A query that Grafana would not turn into valid CQL (unknown variable, unsupported format)."""


def render_grafana_query(text: str, values: Mapping[str, str | Sequence[str]], time_from_ms: int,
                         time_to_ms: int) -> str:
    """The CQL the datasource sends for `text`, with template variables set to `values`."""
    macros = {"__timeFrom": str(time_from_ms), "__timeTo": str(time_to_ms),
              "__unixEpochFrom": str(time_from_ms // 1000), "__unixEpochTo": str(time_to_ms // 1000)}

    def substitute(match: re.Match) -> str:
        name = match.group("plain") or match.group("braced") or match.group("old")
        if name in macros:
            return macros[name]
        if name not in values:
            raise RenderError(f"${name} is neither a dashboard variable nor a datasource macro")
        return _format(name, values[name], match.group("format"))

    return _VARIABLE.sub(substitute, text)


def _format(name: str, value: str | Sequence[str], fmt: str | None) -> str:
    items = [value] if isinstance(value, str) else list(value)
    if fmt == "singlequote":
        if any("'" in item for item in items):
            raise RenderError(f"${name}: a value with a quote would break the CQL string")
        return ",".join(f"'{item}'" for item in items)
    if fmt in (None, "raw"):
        if len(items) != 1:  # Grafana's default for several values is a {a,b} glob: not CQL
            raise RenderError(f"${name} has {len(items)} values: use ${{{name}:singlequote}} inside IN (...)")
        return items[0]
    raise RenderError(f"${{{name}:{fmt}}}: format {fmt!r} is not one these dashboards use")


def referenced_variables(text: str) -> set[str]:
    """Template variables a query uses (datasource time macros excluded)."""
    names = {m.group("plain") or m.group("braced") or m.group("old") for m in _VARIABLE.finditer(text)}
    return names - set(TIME_MACROS)


# ----------------------------------------------------------------------------------- query shape rules

_SELECT = re.compile(
    r"^\s*SELECT\s+(?:DISTINCT\s+)?(?P<selectors>.+?)\s+FROM\s+(?P<table>\w+)"
    r"(?:\s+WHERE\s+(?P<where>.+?))?"
    r"(?:\s+GROUP\s+BY\s+(?P<group>.+?))?"
    r"(?:\s+ORDER\s+BY\s+(?P<order>.+?))?"
    r"(?:\s+PER\s+PARTITION\s+LIMIT\s+\d+)?(?:\s+LIMIT\s+\d+)?"
    r"(?P<filtering>\s+ALLOW\s+FILTERING)?\s*;?\s*$", re.IGNORECASE | re.DOTALL)
_CONDITION = re.compile(r"^(?P<column>\w+)\s*(?P<op>=|IN|>=|<=|>|<)\s*(?P<term>.+)$", re.IGNORECASE | re.DOTALL)
_IDENTIFIER = re.compile(r"'[^']*'|\b([A-Za-z_]\w*)\b(?!\s*\()")


@dataclass(frozen=True)
class ParsedSelect:
    table: str
    selectors: tuple[str, ...]
    conditions: tuple[tuple[str, str], ...]  # (column, operator)
    allow_filtering: bool


def split_top_level(text: str, separator: str) -> list[str]:
    """`text` split on `separator` (a comma or a regex like r"\\s+AND\\s+") outside parentheses/strings."""
    pattern = re.compile(separator, re.IGNORECASE)
    parts, depth, start, i, quoted = [], 0, 0, 0, False
    while i < len(text):
        char = text[i]
        if char == "'":
            quoted = not quoted
        elif not quoted and char in "([":
            depth += 1
        elif not quoted and char in ")]":
            depth -= 1
        elif not quoted and depth == 0:
            match = pattern.match(text, i)
            if match and match.end() > i:
                parts.append(text[start:i])
                start = i = match.end()
                continue
        i += 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def parse_select(cql: str) -> ParsedSelect:
    match = _SELECT.match(cql)
    if match is None:
        raise ValueError(f"not a single-table SELECT: {cql!r}")
    conditions = []
    for condition in split_top_level(match.group("where") or "", r"\s+AND\s+"):
        parsed = _CONDITION.match(condition)
        if parsed is None:
            raise ValueError(f"unsupported WHERE condition {condition!r}")
        conditions.append((parsed.group("column").lower(), parsed.group("op").upper()))
    return ParsedSelect(match.group("table").lower(), tuple(split_top_level(match.group("selectors"), ",")),
                        tuple(conditions), bool(match.group("filtering")))


def key_read_problems(cql: str, schemas: Mapping[str, TableSchema]) -> list[str]:
    """Why `cql` is not a partition-key + clustering-prefix read (empty when it is one)."""
    try:
        query = parse_select(cql)
    except ValueError as exc:
        return [str(exc)]
    schema = schemas.get(query.table)
    if schema is None:
        return [f"table {query.table!r} is not in cql/schema.cql"]
    problems = ["uses ALLOW FILTERING"] if query.allow_filtering else []
    restricted = dict(query.conditions)
    for column, _op in query.conditions:
        if column not in schema.primary_key:
            problems.append(f"filters on {column}, which is not a key column of {query.table}")
    for column in schema.partition_key:
        if restricted.get(column) not in ("=", "IN"):
            problems.append(f"does not restrict partition key column {column} by = or IN")
    for index, column in enumerate(schema.clustering):
        if column in restricted and any(restricted.get(c) != "=" for c in schema.clustering[:index]):
            problems.append(f"restricts clustering column {column} without fixing the ones before it")
    return problems


def selected_columns(cql: str) -> set[str]:
    """Column names the selectors of a SELECT read (function names and string literals excluded)."""
    query = parse_select(cql)
    names = set()
    for selector in query.selectors:
        expression = re.split(r"\s+AS\s+", selector, flags=re.IGNORECASE)[0]
        names.update(m.group(1).lower() for m in _IDENTIFIER.finditer(expression) if m.group(1))
    return names


def exact_column_problems(cql: str, schemas: Mapping[str, TableSchema]) -> list[str]:
    """Selected columns a chart must not read: `*` and decimal (`*_exact`) columns."""
    query = parse_select(cql)
    if any(s.strip() == "*" for s in query.selectors):
        return ["selects * (includes the decimal *_exact columns)"]
    types = schemas[query.table].types if query.table in schemas else {}
    return [f"selects {name} ({types.get(name, '?')})" for name in sorted(selected_columns(cql))
            if name.endswith("_exact") or types.get(name) == "decimal"]


# ------------------------------------------------------------------------------------- result columns

_TEXT = (cqltypes.UTF8Type, cqltypes.AsciiType)
_NUMERIC = (cqltypes.DoubleType, cqltypes.FloatType, cqltypes.Int32Type, cqltypes.LongType, cqltypes.ShortType,
            cqltypes.ByteType)  # counter is a LongType
_TIMESTAMP = (cqltypes.DateType,)  # TimestampType is a DateType
# What the datasource's row.normalize() keeps (gocql types it maps to Grafana fields); decimal, varint,
# duration, time and collections make the whole query fail.
_ACCEPTED = _TEXT + _NUMERIC + _TIMESTAMP + (cqltypes.BooleanType, cqltypes.SimpleDateType, cqltypes.UUIDType,
                                             cqltypes.InetAddressType, cqltypes.BytesType)


def column_type_problems(names: Sequence[str], types: Sequence[type]) -> list[str]:
    """Why a result set is not a series the datasource charts: id text, then a number, then a timestamp."""
    problems = [f"column {name} is {cql_type.typename}, which the datasource rejects"
                for name, cql_type in zip(names, types) if not issubclass(cql_type, _ACCEPTED)]
    expected = (("series id (text)", _TEXT), ("numeric value", _NUMERIC), ("timestamp", _TIMESTAMP))
    for index, (role, kinds) in enumerate(expected):
        if index >= len(types):
            problems.append(f"no column {index + 1} ({role})")
        elif not issubclass(types[index], kinds):
            problems.append(f"column {index + 1} ({names[index]}) is {types[index].typename}, not a {role}")
    return problems


# -------------------------------------------------------------------------------------- the query book


@dataclass(frozen=True)
class BookEntry:
    comment: str  # the `--` lines just above the statement
    statement: str  # without the trailing semicolon
    line: int


def query_book(text: str) -> list[BookEntry]:
    """Statements of cql/queries.cql with the comment that precedes each (blank lines end a comment)."""
    entries, comment, statement, start = [], [], [], 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not statement:
            if line.startswith("--"):
                comment.append(line.lstrip("-").strip())
                continue
            if not line:
                comment = []
                continue
            start = number
        statement.append(raw)
        if line.endswith(";"):
            entries.append(BookEntry(" ".join(comment).strip(), " ".join(" ".join(statement).split())[:-1], start))
            comment, statement = [], []
    if statement:
        raise ValueError(f"statement at line {start} does not end with ';'")
    return entries
