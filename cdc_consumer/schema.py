"""Applies the project's DDL: `sql/*.sql` to PostgreSQL and `cql/*.cql` to Cassandra, idempotently.

Every statement in those files is written to be re-runnable (IF NOT EXISTS, guarded DO blocks), so
applying twice is a no-op. CQL files carry no keyspace qualifier: the keyspace is a validated
identifier created here and selected with USE, which lets tests apply the schema to a fresh keyspace.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Iterable
from importlib import resources
from importlib.resources.abc import Traversable

from cassandra.cluster import Session
from cassandra.connection import ConnectionException
from cassandra.pool import Host

from cdc_consumer.identifiers import validate_identifier

# Files in cql/ that are schema (queries.cql is a query book, not applied).
CQL_SCHEMA_FILES = ("schema.cql",)


def shipped(folder: str) -> Traversable:
    """The repository's `sql/` or `cql/` folder as installed: package data of cdc_consumer (cdc_consumer/sql
    and cdc_consumer/cql link to them), so no top-level `sql` or `cql` import name is installed."""
    return resources.files("cdc_consumer") / folder


def sql_scripts() -> list[tuple[str, str]]:
    """(file name, text) of every sql/*.sql in name order."""
    files = sorted((p for p in shipped("sql").iterdir() if p.name.endswith(".sql")), key=lambda p: p.name)
    return [(p.name, p.read_text(encoding="utf-8")) for p in files]


def cql_statements() -> list[str]:
    statements: list[str] = []
    for name in CQL_SCHEMA_FILES:
        path = shipped("cql") / name
        if path.is_file():
            statements.extend(split_cql(path.read_text(encoding="utf-8")))
    return statements


def split_cql(text: str) -> list[str]:
    """Statements of a CQL script: comments dropped, split on `;` (our files have none inside strings)."""
    without_comments = re.sub(r"(--|//)[^\n]*", "", text)
    without_comments = re.sub(r"/\*.*?\*/", "", without_comments, flags=re.S)
    return [s.strip() for s in without_comments.split(";") if s.strip()]


def apply_sql(conn) -> list[str]:
    """Run every sql/ script in one transaction; returns the file names applied."""
    applied = []
    with conn.transaction():
        for name, text in sql_scripts():
            conn.execute(text)
            applied.append(name)
    return applied


def default_replication(hosts: Iterable[Host], local_dc: str | None = None) -> str:
    """NetworkTopologyStrategy with replication factor min(3, nodes of the DC) in the local DC (or, when
    none is configured, the DC with the most nodes). The nodes are the ring's members as the driver knows
    them, up or down: a node that happens to be down while `cdc init` runs must not lower the keyspace's
    replication for good."""
    per_dc = Counter(h.datacenter for h in hosts if h.datacenter)
    if not per_dc:
        return "{'class': 'SimpleStrategy', 'replication_factor': 1}"
    dc = local_dc or per_dc.most_common(1)[0][0]
    if not re.fullmatch(r"[\w.-]{1,64}", dc):
        raise ValueError(f"data centre name {dc!r} cannot be used in a replication map")
    return f"{{'class': 'NetworkTopologyStrategy', '{dc}': {min(3, max(1, per_dc[dc]))}}}"


def use_keyspace(session: Session, keyspace: str, timeout: float = 60.0) -> None:
    """Make `keyspace` the session's keyspace on every connection. Right after CREATE KEYSPACE, a node
    whose schema has not caught up yet (a cluster that just started, or a loaded one) answers that the
    keyspace does not exist. That is schema propagation, not an error, so ask again until `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            session.set_keyspace(keyspace)
            return
        except ConnectionException as exc:
            if "does not exist" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.5)


def apply_cql(session: Session, keyspace: str, replication: str | None = None) -> int:
    """Create the keyspace if missing (`replication`, default `default_replication` of the session's
    cluster), then every table/type of cql/schema.cql; returns statements run."""
    keyspace = validate_identifier(keyspace, what="keyspace")
    replication = replication or default_replication(session.cluster.metadata.all_hosts())
    if not re.fullmatch(r"\{[\w\s':,.-]*\}", replication):
        raise ValueError(f"replication {replication!r} is not a CQL replication map")
    # Only when missing: even with IF NOT EXISTS, Cassandra's authorizer demands CREATE on ALL KEYSPACES, which
    # a pipeline role granted rights on its own keyspace alone does not have.
    exists = session.execute("SELECT keyspace_name FROM system_schema.keyspaces WHERE keyspace_name = %s",
                             (keyspace,)).one()
    if exists is None:
        # DDL waits for schema agreement across the nodes: as long as the tables below, not the 10 s default
        session.execute(f"CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = {replication}", timeout=60)
    use_keyspace(session, keyspace)
    statements = cql_statements()
    for statement in statements:
        session.execute(statement, timeout=60)
    return len(statements) + 1
