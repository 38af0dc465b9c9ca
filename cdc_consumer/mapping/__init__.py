"""The YAML mapping: which Cassandra rows a change event of a source table becomes.

Three stages, one module each, imported in one direction (spec <- writer <- compile):
  * `spec.py`: `load_mapping`/`parse_mapping` read and check the file into typed specs (`MappingSpec`);
  * `compile.py`: `compile_mapping` checks the specs against the Cassandra tables (described by the CQL
    edge, `cdc_consumer.cql_schema.describe_tables`) and builds one `TargetWriter` per target table,
    giving it the statements the CQL edge prepared for it (`cql_schema.prepare_target`);
  * `writer.py`: at run time `CompiledMapping.writes(event)` turns one event into `Write`s (values
    converted, key columns checked), raising `UnmappableRecord` for a record that must go to the DLQ.
Stages 1 and 2 run at start-up, so a bad mapping is one clear error before any record is read.
This module re-exports the public names of all three (the import path every caller uses).
"""

from cdc_consumer.cql_schema import TableSchema, describe_tables, statements_for
from cdc_consumer.mapping.compile import compile_mapping
from cdc_consumer.mapping.spec import (
    MAX_MAPPING_BYTES,
    MAX_MAPPING_NODES,
    MAX_REPORTED_PROBLEMS,
    NULLS_ON_CREATE,
    ON_DELETE,
    SCHEMA_EVOLUTION,
    ColumnSpec,
    MappingError,
    MappingSpec,
    TableSpec,
    TargetSpec,
    default_mapping_path,
    load_mapping,
    parse_mapping,
)
from cdc_consumer.mapping.writer import (
    CompiledColumn,
    CompiledMapping,
    CompiledTable,
    TargetWriter,
    UnmappableRecord,
    Write,
    native_converter,
)

__all__ = [
    "MAX_MAPPING_BYTES", "MAX_MAPPING_NODES", "MAX_REPORTED_PROBLEMS", "NULLS_ON_CREATE", "ON_DELETE",
    "SCHEMA_EVOLUTION", "ColumnSpec", "CompiledColumn", "CompiledMapping", "CompiledTable", "MappingError",
    "MappingSpec", "TableSchema", "TableSpec", "TargetSpec", "TargetWriter", "UnmappableRecord", "Write",
    "compile_mapping", "default_mapping_path", "describe_tables", "load_mapping", "native_converter",
    "parse_mapping", "statements_for",
]
