"""The poller against real PostgreSQL and the simulated exchange run as a real subprocess.

The simulator runs with `--tick 0` (the market moves only when a test steps it) from a fixed start time,
so two polls see identical data unless the test changes it.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import threading
from dataclasses import replace
from decimal import Decimal

import psycopg
import pytest
import requests
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from cdc_consumer.config import PostgresSettings
from ingest.binance import BinanceClient, ClientConfig
from ingest.models import millis_to_datetime
from ingest.poller import CycleReport, PollConfig, Poller
from ingest.sim import SimProcess
from ingest.store import APPLICATION_NAME, KLINES, METHODS, ORDER_BOOK, TICKERS, TRADES, Store
from tests.integration.ingest_support import db_fixture, rows, sim_fixture  # noqa: F401 (fixtures)
from tests.support import wait_until

pytestmark = pytest.mark.integration

SYMBOLS = ("BTCUSDT", "ETHUSDT", "SYM001USDT")
CYCLE_SUMMARY = re.compile(r"cycle (\d+): .*; weight ")


def make_poller(sim: SimProcess, dsn: str, symbols=SYMBOLS, method: str = "copy", **config) -> Poller:
    client = BinanceClient(ClientConfig(base_url=sim.url))
    return Poller(PollConfig(tuple(symbols), **config), client, Store(PostgresSettings(dsn), method=method))


def row_versions(dsn: str) -> dict[str, dict[tuple, tuple]]:
    """Every row's physical version (ctid, xmin, xmax) by key, per table: any write or row lock changes it."""
    versions = {}
    for spec in (TICKERS, KLINES, ORDER_BOOK, TRADES):
        key = ", ".join(spec.key)
        versions[spec.name] = {r[:-3]: r[-3:] for r in rows(
            dsn, f"SELECT {key}, ctid::text, xmin::text, xmax::text FROM {spec.name}")}
    return versions


def sim_get(sim: SimProcess, path: str, **params):
    return requests.get(sim.url + path, params=params, timeout=5).json()


def test_a_cycle_writes_exactly_what_the_exchange_served(sim, db):
    poller = make_poller(sim, db, kline_intervals=("1m", "1h"), depth=5, trades=20, backfill=10)
    report = poller.run_cycle()
    assert report.problems == []

    for symbol in SYMBOLS:
        served = sim_get(sim, "/api/v3/ticker/24hr", symbol=symbol)
        (stored,) = rows(db, "SELECT event_time, last_price, quote_volume, bid_qty, trade_count, first_id "
                             "FROM ticker_24h WHERE symbol = %s", (symbol,))
        assert stored == (millis_to_datetime(served["closeTime"]), Decimal(served["lastPrice"]),
                          Decimal(served["quoteVolume"]), Decimal(served["bidQty"]), served["count"],
                          served["firstId"])
        for interval in ("1m", "1h"):
            served_klines = sim_get(sim, "/api/v3/klines", symbol=symbol, interval=interval, limit=10)
            stored_klines = rows(db, "SELECT open_time, close, quote_volume, number_of_trades FROM klines "
                                     "WHERE symbol = %s AND interval = %s ORDER BY open_time", (symbol, interval))
            assert stored_klines == [(millis_to_datetime(k[0]), Decimal(k[4]), Decimal(k[7]), k[8])
                                     for k in served_klines]
        book = sim_get(sim, "/api/v3/depth", symbol=symbol, limit=5)
        stored_book = rows(db, "SELECT side, level, price, quantity FROM order_book WHERE symbol = %s "
                               "ORDER BY side DESC, level", (symbol,))
        assert stored_book == [(side, i, Decimal(p), Decimal(q)) for side, key in (("bid", "bids"), ("ask", "asks"))
                               for i, (p, q) in enumerate(book[key])]
        served_trades = sim_get(sim, "/api/v3/trades", symbol=symbol, limit=20)
        assert rows(db, "SELECT trade_id, price FROM trades WHERE symbol = %s ORDER BY trade_id", (symbol,)) == [
            (t["id"], Decimal(t["price"])) for t in served_trades]
    assert report.counts["order_book"].inserted == len(SYMBOLS) * 2 * 5


@pytest.mark.parametrize("method", METHODS)
def test_a_second_identical_cycle_writes_nothing_not_even_a_row_lock(sim, db, method):
    make_poller(sim, db, method=method, depth=5, trades=20).run_cycle()
    before = row_versions(db)
    # A fresh poller (no memory of what it wrote) so only the SQL guards can prevent the writes.
    report = make_poller(sim, db, method=method, depth=5, trades=20).run_cycle()
    assert all((c.inserted, c.updated, c.deleted) == (0, 0, 0) for c in report.counts.values()), report.counts
    assert row_versions(db) == before  # same xmin (no new version), same xmax (no lock), same ctid
    assert sum(len(v) for v in before.values()) > 0


@pytest.mark.parametrize("method", METHODS)
def test_a_price_change_produces_exactly_one_update(sim, db, method):
    poller = make_poller(sim, db, method=method, kline_intervals=("1m",), depth=0, trades=0)
    poller.run_cycle()
    before = row_versions(db)
    sim.step(symbols=["BTCUSDT"])  # BTCUSDT trades one second later, in the same minute
    report = poller.run_cycle()
    after = row_versions(db)

    assert (report.counts["klines"].inserted, report.counts["klines"].updated) == (0, 1)
    changed = [key for key, version in after["klines"].items() if before["klines"].get(key) != version]
    assert len(changed) == 1 and changed[0][:2] == ("BTCUSDT", "1m")
    # the ticker is history keyed by Binance's closeTime: the new statistics are one new row
    assert (report.counts["ticker_24h"].inserted, report.counts["ticker_24h"].updated) == (1, 0)
    assert {k[0] for k in after["ticker_24h"].keys() - before["ticker_24h"].keys()} == {"BTCUSDT"}
    assert all(before["ticker_24h"][k] == after["ticker_24h"][k] for k in before["ticker_24h"])


def test_shallower_books_delete_the_levels_beyond_them(sim, db):
    make_poller(sim, db, symbols=("BTCUSDT",), depth=5, trades=0).run_cycle()
    report = make_poller(sim, db, symbols=("BTCUSDT",), depth=3, trades=0).run_cycle()
    assert report.counts["order_book"].deleted == 4
    assert rows(db, "SELECT side, max(level) FROM order_book GROUP BY side ORDER BY side") == [("ask", 2), ("bid", 2)]


@pytest.mark.parametrize("method", METHODS)
def test_a_row_postgres_refuses_is_named_and_every_other_row_of_the_cycle_is_written(sim, db, method, caplog):
    poller = make_poller(sim, db, method=method, depth=0, trades=0)
    batch = poller.fetch(CycleReport(1))
    bad = batch.tickers[0].symbol
    batch.tickers[0] = replace(batch.tickers[0], last_price=Decimal("1e23"))  # too wide for numeric(30,8)
    with caplog.at_level(logging.WARNING, logger="ingest.store"):
        counts = poller.store.write(batch)
    assert (counts["ticker_24h"].inserted, counts["ticker_24h"].rejected) == (len(SYMBOLS) - 1, 1)
    assert counts["klines"].inserted == len(batch.klines) > 0
    assert rows(db, "SELECT symbol FROM ticker_24h ORDER BY symbol") == [(s,) for s in sorted(SYMBOLS) if s != bad]
    assert rows(db, "SELECT count(*) FROM klines") == [(len(batch.klines),)]
    (named,) = [r.message for r in caplog.records if r.message.startswith("rejected ticker_24h")]
    assert f"symbol={bad}" in named and "22003" in named


def superuser_dsn(dsn: str) -> str:
    params = conninfo_to_dict(dsn)
    params.update(user="postgres", dbname="postgres")
    return make_conninfo(**params)


def test_a_lost_connection_is_retried_and_nothing_fetched_is_lost(sim, db, caplog):
    database = conninfo_to_dict(db)["dbname"]
    poller = make_poller(sim, db, depth=0, trades=100, interval_s=0.3)
    poller.store._backoff_cap_s = 0.5
    thread = threading.Thread(target=poller.run, daemon=True)
    with caplog.at_level(logging.WARNING, logger="ingest.store"):
        thread.start()
        wait_until(lambda: rows(db, "SELECT count(*) FROM trades")[0][0] > 0, what="the first cycle's trades")
        with psycopg.connect(superuser_dsn(db), autocommit=True) as admin:
            # A real outage: the server drops the poller's session and refuses new ones for a while.
            admin.execute(f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS false')
            terminated = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND application_name = %s",
                (database, APPLICATION_NAME)).fetchall()
            assert terminated == [(True,)]
            sim.step(symbols=list(SYMBOLS), steps=5)  # new trades the poller fetches during the outage
            wait_until(lambda: sum("PostgreSQL write failed" in r.message for r in caplog.records) >= 2,
                       what="the poller retrying its write")
            admin.execute(f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS true')

        def all_trades_stored() -> bool:
            served = {(s, t["id"]) for s in SYMBOLS for t in sim_get(sim, "/api/v3/trades", symbol=s, limit=100)}
            return served <= set(rows(db, "SELECT symbol, trade_id FROM trades"))

        wait_until(all_trades_stored, timeout=30, what="every trade fetched during the outage in PostgreSQL")
        assert thread.is_alive()  # recovered, not crashed
    poller.stop.set()
    thread.join(timeout=10)
    assert not thread.is_alive()


def cdc(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cdc_cli.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            **kwargs)


def test_cdc_poll_once_writes_and_logs_one_summary_line(sim, db):
    process = cdc("poll", "--symbols", ",".join(SYMBOLS), "--once", "--depth", "5", "--base-url", sim.url,
                  "--pg-dsn", db)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output
    summaries = [line for line in output.splitlines() if "cycle 1:" in line and "weight" in line]
    assert len(summaries) == 1
    assert "ticker_24h +3 ~0" in summaries[0] and "order_book +30 ~0" in summaries[0]
    assert rows(db, "SELECT count(*) FROM ticker_24h") == [(3,)]


def test_sigterm_finishes_the_cycle_and_exits_0(sim, db):
    process = cdc("poll", "--symbols", ",".join(SYMBOLS), "--interval", "1s", "--base-url", sim.url,
                  "--pg-dsn", db)
    lines: list[str] = []

    def read() -> None:
        for line in process.stdout:
            lines.append(line)

    def cycles_done() -> int:
        return max((int(m.group(1)) for m in map(CYCLE_SUMMARY.search, list(lines)) if m), default=0)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    wait_until(cycles_done, timeout=30, what="the first cycle's summary")
    sim.fault(delay_s=3, path="/api/v3/ticker/24hr")  # the next cycle's first request is held 3 s
    wait_until(lambda: not sim_get(sim, "/__sim/faults")["faults"], timeout=30,
               what="the next cycle's ticker request to reach the simulator")
    sim.step(symbols=list(SYMBOLS))  # the held request answers with new tickers: rows only this cycle writes
    cycle = cycles_done() + 1  # the cycle whose ticker request the simulator holds
    process.send_signal(signal.SIGTERM)  # during the cycle: its ticker request is still being answered
    process.wait(timeout=30)
    reader.join(timeout=10)
    output = "".join(lines)
    assert process.returncode == 0, output
    after = output[output.index("SIGTERM received"):]
    assert f"stop requested: ending cycle {cycle} early" in after, output
    summary = next(line for line in after.splitlines() if f"cycle {cycle}:" in line)
    assert "ticker_24h +3 " in summary, output  # the cycle under way when SIGTERM came still wrote its rows
    assert f"poller stopped after {cycle} cycle(s)" in after, output
    assert rows(db, "SELECT count(*) FROM ticker_24h") == [(6,)]
