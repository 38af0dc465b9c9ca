"""Mapping stage 2: check the specs against the live Cassandra tables and build the run-time writers.

`compile_mapping` takes the `MappingSpec` of `spec.py` and the table descriptions of the CQL edge
(`cql_schema.describe_tables`), checks every target column's existence and type against its conversion
and that every key column is mapped (all problems in one `MappingError`), and builds one `TargetWriter`
per target. Given a `prepare` callable (e.g. `Session.prepare`), the CQL edge prepares each target's
statements first (`cql_schema.prepare_target`) and the writer receives them at construction.
"""

from __future__ import annotations

from cdc_consumer.conversions import CONVERSIONS, DEFAULT_FOR_CQL_TYPE
from cdc_consumer.cql_schema import Prepare, TableSchema, prepare_target
from cdc_consumer.errors import MappingError
from cdc_consumer.mapping.spec import MappingSpec, TargetSpec
from cdc_consumer.mapping.writer import CompiledColumn, CompiledMapping, CompiledTable, TargetWriter


def compile_mapping(spec: MappingSpec, schemas: dict[str, TableSchema], prepare: Prepare | None = None,
                    keyspace: str | None = None) -> CompiledMapping:
    """Check the specs against the Cassandra tables, then (when `prepare` is given, and only once the
    whole mapping fits) prepare each target's statements and build its writer with them."""
    problems: list[str] = []
    checked: dict[str, list[tuple[TargetSpec, TableSchema, tuple[CompiledColumn, ...]]]] = {}
    for name, table in spec.tables.items():
        checked[name] = []
        for index, target in enumerate(table.targets):
            where = f"tables.{name}.targets[{index}] ({target.table})"
            columns = _check_target(where, target, schemas.get(target.table), problems)
            if columns is not None:
                checked[name].append((target, schemas[target.table], columns))
    if problems:
        raise MappingError(f"{spec.origin}: mapping does not fit the Cassandra schema"
                           f"{f' of keyspace {keyspace}' if keyspace else ''}:\n  - " + "\n  - ".join(problems))
    tables = {name: CompiledTable(table, tuple(_writer(target, schema, columns, prepare, keyspace)
                                               for target, schema, columns in checked[name]))
              for name, table in spec.tables.items()}
    return CompiledMapping(spec, tables)


def _writer(target: TargetSpec, schema: TableSchema, columns: tuple[CompiledColumn, ...], prepare: Prepare | None,
            keyspace: str | None) -> TargetWriter:
    """The run-time writer of a checked target, with its prepared statements when `prepare` is given."""
    statements = None
    if prepare is not None:
        statements = prepare_target(prepare, target.table, [c.column for c in columns], schema.primary_key, keyspace)
    return TargetWriter(target.table, columns, schema.primary_key, len(schema.partition_key), target.on_delete,
                        target.nulls_on_create, target.snapshot_version_from, statements)


def _check_target(where: str, target: TargetSpec, schema: TableSchema | None,
                  problems: list[str]) -> tuple[CompiledColumn, ...] | None:
    """The compiled columns of a target that fits its Cassandra table, else None (problems appended)."""
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
    return tuple(columns) if len(problems) == count else None
