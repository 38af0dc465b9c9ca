"""Compare PostgreSQL source tables with their Cassandra tables, through the mapping.

For every target table of the mapping, source rows are streamed from PostgreSQL (server-side cursor)
ordered by the source columns the target key is derived from, so the rows of one Cassandra partition
arrive together. Each such group is compared with one single-partition Cassandra read; afterwards the
target's partition keys (`SELECT DISTINCT`) are scanned for partitions that have no source rows at all.
Memory is bounded by one partition plus the set of partition keys seen, not by the table size.

Values are compared after the mapping's own conversions: decimals exactly (`Decimal` equality, no
float), chart doubles bit for bit, timestamps in milliseconds as Cassandra stores them. The expected
values come from the pure-Python conversion loop (`TargetWriter.upsert_python`), never from the C loop
of `_cql_native` that the sink writes with, so the checker is not the sink's twin.

Targets whose key is coarser than the source key (e.g. `latest_prices`, one row per symbol) are
compared with the newest source row of each target key in source-key order.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from cassandra.query import UNSET_VALUE, SimpleStatement
from cassandra.util import Date as CassandraDate
from psycopg import sql
from psycopg.rows import dict_row

from cdc_consumer.conversions import to_timestamp_ms
from cdc_consumer.errors import UnmappableRecord
from cdc_consumer.mapping import CompiledMapping, TargetWriter

PAGE_SIZE = 5000


@dataclass
class TargetReport:
    source_table: str
    target: str
    source_rows: int = 0
    target_rows: int = 0
    matched: int = 0
    missing: int = 0  # in PostgreSQL, not in Cassandra
    extra: int = 0  # in Cassandra, not in PostgreSQL
    differing: int = 0
    unmappable: int = 0  # source rows the mapping cannot convert (the consumer sends those to the DLQ)
    samples: list[dict[str, Any]] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return not (self.missing or self.extra or self.differing or self.unmappable)

    def sample(self, limit: int, **entry: Any) -> None:
        if len(self.samples) < limit:
            self.samples.append(entry)


class VerifyError(RuntimeError):
    """Verification could not run (not a difference): bad table name, non-contiguous partitions, …"""


@dataclass(frozen=True)
class Plan:
    """How one target is compared: the source query order and the time filter, if any."""

    source_table: str
    writer: TargetWriter
    order_by: tuple[str, ...]
    since_column: str | None  # source timestamp column filtered by --since
    since_target_column: str | None  # the Cassandra column holding it (ms), for extra rows


def plans(mapping: CompiledMapping, tables: tuple[str, ...] = ()) -> list[Plan]:
    """One plan per (source table, target); `tables` filters by source (`public.klines`) or target name."""
    result = []
    for source_table, compiled in mapping.tables.items():
        for writer in compiled.targets:
            if tables and source_table not in tables and writer.table not in tables:
                continue
            order: list[str] = []
            for column in writer.key_columns:
                order.extend(s for s in column.sources if s not in order)
            since_col, since_target = None, None
            for column in writer.key_columns:
                if column.conversion.name == "timestamp":
                    since_col, since_target = column.sources[0], column.column
                    break
            result.append(Plan(source_table, writer, tuple(order), since_col, since_target))
    if tables:
        known = {p.source_table for p in result} | {p.writer.table for p in result}
        unknown = [t for t in tables if t not in known]
        if unknown:
            raise VerifyError(f"no mapped table named {', '.join(unknown)} "
                              f"(mapped: {', '.join(sorted(mapping.tables))})")
    return result


def _normalise(value: Any) -> Any:
    """Cassandra driver values and converted source values in one comparable form."""
    if value is UNSET_VALUE:
        return None
    if isinstance(value, dt.datetime):
        return to_timestamp_ms(value)
    if isinstance(value, CassandraDate):
        return value.date()
    return value


def _source_rows(conn, plan: Plan, since: dt.datetime | None) -> Iterator[dict[str, Any]]:
    schema, _, table = plan.source_table.partition(".")
    query = sql.SQL("SELECT * FROM {} {} ORDER BY {}").format(
        sql.Identifier(schema, table),
        sql.SQL("WHERE {} >= %s").format(sql.Identifier(plan.since_column)) if since and plan.since_column
        else sql.SQL(""),
        sql.SQL(", ").join(sql.Identifier(c) for c in plan.order_by))
    params = (since,) if since and plan.since_column else ()
    with conn.cursor(name=f"cdc_verify_{table}", row_factory=dict_row) as cursor:
        cursor.itersize = PAGE_SIZE
        cursor.execute(query, params)
        yield from cursor


class _TargetReader:
    """Single-partition reads and the partition-key scan of one Cassandra table."""

    def __init__(self, session, keyspace: str, writer: TargetWriter) -> None:
        self.session = session
        self.writer = writer
        self.columns = [c.column for c in writer.columns]
        partition = writer.primary_key[: writer.partition_size]
        where = " AND ".join(f"{k} = ?" for k in partition)
        self.partition_columns = partition
        self.select = session.prepare(f"SELECT {', '.join(self.columns)} FROM {keyspace}.{writer.table} "
                                      f"WHERE {where}")
        self.select.fetch_size = PAGE_SIZE
        self.distinct = SimpleStatement(f"SELECT DISTINCT {', '.join(partition)} FROM {keyspace}.{writer.table}",
                                        fetch_size=PAGE_SIZE)

    def rows(self, partition_key: tuple) -> Iterator[dict[str, Any]]:
        for row in self.session.execute(self.select, partition_key):
            yield {c: _normalise(v) for c, v in zip(self.columns, row)}

    def partitions(self) -> Iterator[tuple]:
        for row in self.session.execute(self.distinct):
            yield tuple(_normalise(v) for v in row)


def verify_target(conn, session, keyspace: str, plan: Plan, *, since: dt.datetime | None = None,
                  sample_limit: int = 5, progress: Callable[[int], None] | None = None) -> TargetReport:
    writer = plan.writer
    report = TargetReport(plan.source_table, writer.table)
    reader = _TargetReader(session, keyspace, writer)
    key_index = [reader.columns.index(k) for k in writer.primary_key]
    since_ms = to_timestamp_ms(since) if since else None
    seen: set[tuple] = set()

    def key_of(values: list) -> tuple:
        return tuple(values[i] for i in key_index)

    def compare_partition(partition: tuple, expected: dict[tuple, dict[str, Any]]) -> None:
        if partition in seen:
            raise VerifyError(f"{writer.table}: partition {partition} is not contiguous in source order "
                              f"{', '.join(plan.order_by)}; this mapping cannot be verified by streaming")
        seen.add(partition)
        for actual in reader.rows(partition):
            if since_ms is not None and plan.since_target_column and \
                    (actual[plan.since_target_column] or 0) < since_ms:
                continue
            report.target_rows += 1
            key = tuple(actual[k] for k in writer.primary_key)
            want = expected.pop(key, None)
            if want is None:
                report.extra += 1
                report.sample(sample_limit, kind="extra", table=writer.table, key=key)
                continue
            diff = {c: {"postgres": want[c], "cassandra": actual[c]}
                    for c in reader.columns if want[c] != actual[c]}
            if diff:
                report.differing += 1
                report.sample(sample_limit, kind="differs", table=writer.table, key=key, columns=diff)
            else:
                report.matched += 1
        for key in expected:
            report.missing += 1
            report.sample(sample_limit, kind="missing", table=writer.table, key=key)

    current: tuple | None = None
    expected: dict[tuple, dict[str, Any]] = {}
    for row in _source_rows(conn, plan, since):
        report.source_rows += 1
        if progress:
            progress(1)
        try:
            write = writer.upsert_python(row, None, 0, ())  # as upsert(create=False), in Python
        except UnmappableRecord as exc:
            report.unmappable += 1
            report.sample(sample_limit, kind="unmappable", table=writer.table, reason=str(exc))
            continue
        assert write.values is not None, "an upsert always carries values"
        values = [_normalise(v) for v in write.values]
        partition = tuple(_normalise(v) for v in write.partition)
        if partition != current:
            if current is not None:
                compare_partition(current, expected)
            current, expected = partition, {}
        expected[key_of(values)] = dict(zip(reader.columns, values))  # a later source row wins
    if current is not None:
        compare_partition(current, expected)

    for partition in reader.partitions():
        if partition in seen:
            continue
        for actual in reader.rows(partition):
            if since_ms is not None and plan.since_target_column and \
                    (actual[plan.since_target_column] or 0) < since_ms:
                continue
            report.target_rows += 1
            report.extra += 1
            report.sample(sample_limit, kind="extra", table=writer.table,
                          key=tuple(actual[k] for k in writer.primary_key))
    return report


def estimated_rows(conn, source_table: str) -> int:
    """Planner estimate of a table's rows (for the progress bar; no full scan)."""
    row = conn.execute("SELECT GREATEST(reltuples, 0)::bigint FROM pg_class WHERE oid = to_regclass(%s)",
                       (source_table,)).fetchone()
    return int(row[0]) if row and row[0] is not None else 0
