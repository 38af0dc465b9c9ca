"""Hostile exchange data and permanent PostgreSQL errors, against real PostgreSQL (issues 14 and 15).

The exchange is the simulator run as a subprocess; a client subclass spoils chosen items of its real
responses before they are parsed, so the bad values go through the real parsers and the real store.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading

import psycopg
import pytest

from cdc_consumer.config import PostgresSettings
from ingest.binance import BinanceClient, ClientConfig
from ingest.poller import PollConfig, Poller
from ingest.store import Store
from tests.integration.ingest_support import db_fixture, rows, sim_fixture  # noqa: F401 (fixtures)
from tests.support import wait_until

pytestmark = pytest.mark.integration

SYMBOLS = ("BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT", "XRPUSDT")
# symbol -> (Binance field, spoiled value): each is one bad item among good ones
SPOILED_TICKERS = {
    "ETHUSDT": ("closeTime", 10**17),  # far beyond year 9999
    "BNBUSDT": ("lastPrice", "1" * 23 + ".5"),  # 23 integer digits; numeric(30,8) holds 22
    "SOLUSDT": ("volume", "lots"),  # not a number
}
SPOILED_KLINE_CLOSE = "9" * 23  # the close of one BTCUSDT kline: too wide for numeric(30,8)


class SpoilingClient(BinanceClient):
    """The real client; chosen items of the real responses are spoiled before they are parsed."""

    def get_json(self, path, params, weight, symbols):
        payload = super().get_json(path, params, weight, symbols)
        if path == "/api/v3/ticker/24hr":
            for item in payload:
                if item["symbol"] in SPOILED_TICKERS:
                    field, value = SPOILED_TICKERS[item["symbol"]]
                    item[field] = value
        elif path == "/api/v3/klines" and params["symbol"] == "BTCUSDT":
            payload[0][4] = SPOILED_KLINE_CLOSE
        return payload


def make_poller(sim, dsn: str, client_class=BinanceClient, **config) -> Poller:
    client = client_class(ClientConfig(base_url=sim.url))
    return Poller(PollConfig(SYMBOLS, **config), client, Store(PostgresSettings(dsn)))


def test_bad_items_are_rejected_by_name_and_every_other_item_of_the_cycle_is_written(sim, db, caplog):
    poller = make_poller(sim, db, SpoilingClient, kline_intervals=("1m",), depth=0, trades=0, backfill=3)
    with caplog.at_level(logging.WARNING, logger="ingest.poller"):
        report = poller.run_cycle()

    good = sorted(set(SYMBOLS) - set(SPOILED_TICKERS))
    assert rows(db, "SELECT symbol FROM ticker_24h ORDER BY symbol") == [(s,) for s in good]
    assert report.items_rejected == poller.items_rejected == len(SPOILED_TICKERS) + 1
    for symbol, (field, _) in SPOILED_TICKERS.items():
        assert any(f"rejected ticker {symbol}.{field}" in r.message for r in caplog.records), (symbol, field)
    assert any("BNBUSDT.lastPrice" in r.message and "23 integer digits" in r.message for r in caplog.records)
    assert any("ETHUSDT.closeTime" in r.message and "outside years 1-9999" in r.message for r in caplog.records)
    # klines: the frozen market has one (open) kline per symbol; all are written but the spoiled BTCUSDT one
    assert rows(db, "SELECT symbol, count(*) FROM klines GROUP BY symbol ORDER BY symbol") == [
        (s, 1) for s in sorted(SYMBOLS) if s != "BTCUSDT"]
    assert any("rejected kline BTCUSDT 1m[4] close" in r.message for r in caplog.records)


def test_a_permanent_postgres_error_stops_the_poller_after_consecutive_failed_cycles(sim, db, caplog):
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("ALTER TABLE klines DROP COLUMN quote_volume")  # the poller still writes it: 42703
    poller = make_poller(sim, db, kline_intervals=("1m",), depth=0, trades=0, interval_s=0.05)
    outcome: list[int] = []
    thread = threading.Thread(target=lambda: outcome.append(poller.run()), daemon=True)
    with caplog.at_level(logging.ERROR, logger="ingest.poller"):
        thread.start()
        try:
            wait_until(lambda: outcome, timeout=60, what="the poller to stop on its own")
        finally:
            poller.stop.set()
            thread.join(timeout=30)
    assert outcome == [1]
    assert poller.cycles == poller.config.max_failed_writes == 3
    (message,) = [r.message for r in caplog.records if "consecutive cycles" in r.message]
    assert "UndefinedColumn 42703" in message and "quote_volume" in message


def test_a_cycle_after_a_failed_one_resets_the_count(sim, db):
    poller = make_poller(sim, db, kline_intervals=("1m",), depth=0, trades=0)
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("ALTER TABLE klines RENAME COLUMN quote_volume TO qv")
        for _ in range(2):
            report = poller.run_cycle()
            assert report.write_failed and not poller._too_many_failed_writes(report)
        assert poller.failed_writes == 2
        conn.execute("ALTER TABLE klines RENAME COLUMN qv TO quote_volume")
    report = poller.run_cycle()
    assert not report.write_failed and report.counts["klines"].inserted > 0
    assert not poller._too_many_failed_writes(report) and poller.failed_writes == 0


def cdc_poll(*args: str, dsn: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CDC_PG_DSN": dsn}
    return subprocess.run([sys.executable, "-m", "cdc_cli.cli", "poll", "--once", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def test_poll_once_exits_1_when_nothing_could_be_fetched(db):
    # nothing listens on port 9 of loopback (discard); one request, two attempts
    result = cdc_poll("--symbols", "BTCUSDT", "--klines", "", "--depth", "0", "--trades", "0",
                      "--base-url", "http://127.0.0.1:9", dsn=db)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "fetched nothing" in result.stderr and "Traceback" not in result.stderr


def test_poll_never_shows_the_exchange_url_credentials_while_its_requests_fail(db):
    secret = "pw-6c1f0e2a"
    env = {**os.environ, "CDC_PG_DSN": db}
    # -vv: the debug lines of requests and urllib3 too; nothing listens on port 9 of loopback
    result = subprocess.run([sys.executable, "-m", "cdc_cli.cli", "-vv", "poll", "--once", "--symbols", "BTCUSDT",
                             "--klines", "", "--depth", "0", "--trades", "0",
                             "--base-url", f"http://key:{secret}@127.0.0.1:9"],
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "fetched nothing" in result.stderr and "Traceback" not in result.stderr
    # the lines that carry the URL and the failure were written, with the password masked
    assert "from http://key:********@127.0.0.1:9 every" in result.stderr, result.stderr[-2000:]
    assert "failed (ConnectionError: " in result.stderr and "attempt 1/" in result.stderr, result.stderr[-2000:]
    assert secret not in result.stderr and secret not in result.stdout


def test_poll_once_exits_0_when_the_cycle_wrote_and_1_when_postgres_refuses_the_write(sim, db):
    args = ("--symbols", "BTCUSDT", "--klines", "", "--depth", "0", "--trades", "0", "--base-url", sim.url)
    result = cdc_poll(*args, dsn=db)
    assert result.returncode == 0, result.stderr[-2000:]
    assert rows(db, "SELECT symbol FROM ticker_24h") == [("BTCUSDT",)]

    sim.step()
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("ALTER TABLE ticker_24h DROP COLUMN trade_count")
    result = cdc_poll(*args, dsn=db)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "PostgreSQL refused" in result.stderr and "Traceback" not in result.stderr
