"""PostgreSQL edge: connections with a clear error naming the service when it is down."""

from __future__ import annotations

import psycopg
from psycopg.conninfo import conninfo_to_dict

from cdc_consumer.config import PostgresSettings
from cdc_consumer.secrets import mask_dsn, mask_text


class ServiceUnavailable(RuntimeError):
    """A service the command needs cannot be reached; the message names it and where."""


class InvalidDsn(ValueError):
    """A PostgreSQL connection string that cannot be parsed; the message never shows its text."""


def check_dsn(dsn: str) -> str:
    """`dsn` if libpq can parse it; else InvalidDsn (the text is not shown: it may hold a password)."""
    try:
        conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        raise InvalidDsn(f"the PostgreSQL connection string ({len(dsn)} characters, not shown: it may hold a "
                         "password) cannot be parsed; expected postgresql://user@host:port/db or "
                         "'host=... port=... dbname=...'") from None
    return dsn


def connect(pg: PostgresSettings, *, autocommit: bool = False, timeout: int = 5) -> psycopg.Connection:
    check_dsn(pg.dsn)
    try:
        return psycopg.connect(**pg.connect_kwargs(), autocommit=autocommit, connect_timeout=timeout)
    except psycopg.OperationalError as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ServiceUnavailable(f"PostgreSQL unreachable at {mask_dsn(pg.dsn)}: {mask_text(first_line)}") from exc
