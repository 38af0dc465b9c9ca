"""`cdc poll --once` (a real subprocess) against the simulator (a real subprocess) with injected faults,
writing to real PostgreSQL. Timings come from the simulator's own log of the requests it received."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ingest.sim import SimProcess
from tests.integration.ingest_support import db_fixture, rows, sim_fixture  # noqa: F401 (fixtures)

pytestmark = pytest.mark.integration

SYMBOLS = "BTCUSDT,ETHUSDT"


def poll_once(sim: SimProcess, db: str, symbols: str = SYMBOLS, *extra: str) -> str:
    """Run one cycle; returns its log output (it must exit 0: faults are handled, not fatal)."""
    result = subprocess.run([sys.executable, "-m", "cdc_cli.cli", "poll", "--symbols", symbols, "--once",
                             "--depth", "5", "--trades", "10", "--base-url", sim.url, "--pg-dsn", db, *extra],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def stored_symbols(db: str, table: str) -> set[str]:
    return {symbol for (symbol,) in rows(db, f"SELECT DISTINCT symbol FROM {table}")}


def test_429_with_retry_after_2_delays_the_next_request_at_least_2_s(sim, db):
    sim.fault(status=429, retry_after=2, count=1)
    output = poll_once(sim, db)
    first, second = sim.requests_received()[:2]
    assert first["status"] == 429 and second["status"] == 200
    assert second["time"] - first["time"] >= 2.0  # real wall-clock delay measured by the server
    assert "HTTP 429" in output
    assert stored_symbols(db, "ticker_24h") == {"BTCUSDT", "ETHUSDT"}


def test_418_stops_all_requests_until_retry_after_and_says_so_loudly(sim, db):
    sim.fault(status=418, retry_after=3, count=1, path="/api/v3/klines")
    output = poll_once(sim, db)
    received = sim.requests_received()
    banned = next(i for i, r in enumerate(received) if r["status"] == 418)
    after_ban = received[banned + 1:]
    assert after_ban, "polling resumed after the ban"
    assert min(r["time"] for r in after_ban) - received[banned]["time"] >= 3.0  # nothing sent during the ban
    assert "CRITICAL" in output and "IP BAN (HTTP 418)" in output
    assert stored_symbols(db, "klines") == {"BTCUSDT", "ETHUSDT"}  # the banned request was retried after it


def test_500_is_retried_until_it_succeeds(sim, db):
    sim.fault(status=500, count=2, path="/api/v3/ticker/24hr")
    poll_once(sim, db)
    tickers = [r["status"] for r in sim.requests_received() if r["path"] == "/api/v3/ticker/24hr"]
    assert tickers == [500, 500, 200]
    assert stored_symbols(db, "ticker_24h") == {"BTCUSDT", "ETHUSDT"}


def test_malformed_json_skips_only_that_response(sim, db):
    sim.fault(malformed=True, count=1, path="/api/v3/depth")
    output = poll_once(sim, db)
    assert "depth BTCUSDT" in output and "not JSON" in output
    assert stored_symbols(db, "order_book") == {"ETHUSDT"}
    assert stored_symbols(db, "ticker_24h") == stored_symbols(db, "trades") == {"BTCUSDT", "ETHUSDT"}


def test_an_unknown_symbol_is_named_and_the_others_are_polled(sim, db):
    output = poll_once(sim, db, "BTCUSDT,FOOUSDT,ETHUSDT")
    assert "symbol FOOUSDT is invalid" in output
    for table in ("ticker_24h", "klines", "order_book", "trades"):
        assert stored_symbols(db, table) == {"BTCUSDT", "ETHUSDT"}, table


def test_a_symbol_delisted_mid_run_is_dropped_while_the_others_carry_on(sim, db):
    sim.fault(unknown_symbol="ETHUSDT")
    output = poll_once(sim, db)
    assert "symbol ETHUSDT is invalid" in output
    assert stored_symbols(db, "ticker_24h") == {"BTCUSDT"}


def test_a_slow_response_within_the_timeout_is_waited_for_not_retried(sim, db):
    sim.fault(delay_s=1.5, count=1, path="/api/v3/ticker/24hr")
    poll_once(sim, db)
    assert [r["path"] for r in sim.requests_received()].count("/api/v3/ticker/24hr") == 1
    assert stored_symbols(db, "ticker_24h") == {"BTCUSDT", "ETHUSDT"}
