"""Fixtures of the ingest integration tests: a database with the schema applied, the simulator as a subprocess.

Import the `*_fixture` functions into a test module to use the fixtures `db` and `sim`."""

from __future__ import annotations

import psycopg
import pytest

from cdc_consumer.schema import apply_sql
from ingest.sim import SimProcess

SIM_START = "2024-01-01T00:00:10"  # 10 s into a minute: a one-second step never opens a new 1m kline


@pytest.fixture(name="db")
def db_fixture(pg_database: str) -> str:
    """A fresh database with sql/ applied (as `cdc init` does)."""
    with psycopg.connect(pg_database) as conn:
        apply_sql(conn)
    return pg_database


@pytest.fixture(name="sim")
def sim_fixture():
    """`cdc binance-sim` on a free port, frozen (`--tick 0`: only the test moves the market), fixed start."""
    with SimProcess(symbols=10, seed=3, tick="0", extra=("--start", SIM_START)) as process:
        yield process


def rows(dsn: str, sql: str, params=()) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql, params).fetchall()
