"""PostgreSQL edge: connections with a clear error naming the service when it is down."""

from __future__ import annotations

import psycopg

from cdc_consumer.config import PostgresSettings


class ServiceUnavailable(RuntimeError):
    """A service the command needs cannot be reached; the message names it and where."""


def connect(pg: PostgresSettings, *, autocommit: bool = False, timeout: int = 5) -> psycopg.Connection:
    try:
        return psycopg.connect(**pg.connect_kwargs(), autocommit=autocommit, connect_timeout=timeout)
    except psycopg.OperationalError as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ServiceUnavailable(f"PostgreSQL unreachable at {_safe(pg.dsn)}: {first_line}") from exc


def _safe(dsn: str) -> str:
    """The DSN without any password, for messages and logs."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "<unparsable DSN>"
    params.pop("password", None)
    return make_conninfo(**params)
