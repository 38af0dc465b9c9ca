"""The Cassandra tables of cql/schema.cql as mapping.TableSchema, read from the CQL text itself.

Unit tests compile the mapping against these without a Cassandra; the integration tests check the same
mapping against the real system_schema.
"""

from __future__ import annotations

import re

from cdc_consumer.mapping import TableSchema
from cdc_consumer.schema import shipped, split_cql

_CREATE = re.compile(r"CREATE TABLE IF NOT EXISTS (\w+)\s*\((.*)\)", re.DOTALL)
_KEY = re.compile(r"PRIMARY KEY\s*\(\s*(?:\(([^)]*)\)|(\w+))\s*(?:,([^)]*))?\)")


def cql_table_schemas() -> dict[str, TableSchema]:
    text = (shipped("cql") / "schema.cql").read_text(encoding="utf-8")
    tables = {}
    for statement in split_cql(text):
        match = _CREATE.search(statement)
        if not match:
            continue
        name, body = match.group(1), match.group(2).split(") WITH")[0]
        types, partition, clustering = {}, (), ()
        key = _KEY.search(body)
        if key:
            partition = tuple(c.strip() for c in (key.group(1) or key.group(2)).split(","))
            clustering = tuple(c.strip() for c in (key.group(3) or "").split(",") if c.strip())
            body = body[: key.start()]
        for line in body.split(","):
            words = line.split()
            if len(words) >= 2:
                types[words[0]] = words[1]
                if words[2:4] == ["PRIMARY", "KEY"]:
                    partition = (words[0],)
        tables[name] = TableSchema(name, types, partition, clustering)
    return tables
