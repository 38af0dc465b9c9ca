"""Hostile exchange answers (issue 15, Poller): Retry-After, rate-limit caps, total deadlines, body size,
bad items named and the rest kept, PostgreSQL failure classes, `--once` exit status.

Scripted answers come from a real local HTTP server (`ScriptedExchange`); the poller's PostgreSQL edge is a
recorder here (the real writes: tests/integration/test_poller_hostile_pg.py)."""

from __future__ import annotations

import logging
import re
import socket
import threading
import time
from datetime import UTC, datetime
from decimal import Decimal

import psycopg
import psycopg.errors
import pytest

from cdc_consumer import pg
from ingest.binance import (
    BinanceClient,
    ClientConfig,
    RequestFailed,
    ResponseTooLarge,
    retry_after_seconds,
)
from ingest.models import KLINE_FIELDS, TICKER_DECIMALS, MalformedPayload, parse_kline, parse_ticker, parse_trade
from ingest.poller import PollConfig, Poller
from ingest.sim import SimControl, SimServer
from ingest.store import FATAL, ROW, TRANSIENT, failure_kind
from tests.support import REPO
from tests.unit.test_binance_client import FakeClock
from tests.unit.test_binance_poller import RecordingStore

KLINE = b'[[1700000000000,"1.0","1.0","1.0","1.0","1.0",1700000059999,"1.0",1,"1.0","1.0","0"]]'


class ScriptedExchange:
    """A loopback HTTP server answering each connection with the next scripted raw response.

    A response is (head: bytes, body: bytes, pause_s): `pause_s` > 0 sends it one byte at a time with that
    pause between bytes (a trickling server)."""

    def __init__(self, *responses: tuple[bytes, bytes, float]):
        self.responses = list(responses)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.closed = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        for head, body, pause_s in self.responses:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)  # the request
                data = head + body
                try:
                    if pause_s:
                        for i in range(len(data)):
                            if self.closed.wait(pause_s):
                                return
                            conn.sendall(data[i:i + 1])
                    else:
                        conn.sendall(data)
                except OSError:  # the client cut the connection
                    continue

    def close(self) -> None:
        self.closed.set()
        self.listener.close()
        self.thread.join(timeout=5)


def answer(status: int, body: bytes = KLINE, **headers: str) -> tuple[bytes, bytes, float]:
    lines = [f"HTTP/1.1 {status} X", f"Content-Length: {len(body)}", "Connection: close",
             *(f"{k.replace('_', '-')}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode(), body, 0.0


@pytest.fixture()
def clock() -> FakeClock:
    return FakeClock()


def scripted_client(exchange: ScriptedExchange, clock: FakeClock, **config) -> BinanceClient:
    return BinanceClient(ClientConfig(base_url=exchange.url, **config), clock=clock, sleep=clock.sleep,
                         jitter=lambda: 0.5)


# -- Retry-After ----------------------------------------------------------------------------------------------

def test_a_retry_after_that_is_not_a_finite_non_negative_number_gives_the_default():
    headers = ["-5", "nan", "NaN", "inf", "-inf", "Infinity", "1e400", "soon", "", " ",
               "Wed, 21 Oct 2015 07:28:00 GMT", "9" * 100]
    assert {header: retry_after_seconds(header, 60.0) for header in headers} == dict.fromkeys(headers, 60.0)
    valid = {"0": 0.0, "2": 2.0, "1.5": 1.5, None: 60.0}
    assert {header: retry_after_seconds(header, 60.0) for header in valid} == valid


@pytest.mark.parametrize("header", ["-30", "nan", "inf"])
def test_a_429_with_an_unusable_retry_after_waits_the_default_backoff(clock, header):
    exchange = ScriptedExchange(answer(429, b"{}", Retry_After=header), answer(200))
    try:
        klines, _ = scripted_client(exchange, clock, default_retry_after_s=7.0).klines("BTCUSDT", "1m")
    finally:
        exchange.close()
    assert len(klines) == 1
    assert sum(clock.sleeps) == pytest.approx(7.0, abs=0.1)


def test_a_429_wait_is_capped_whatever_retry_after_says(clock, caplog):
    exchange = ScriptedExchange(answer(429, b"{}", Retry_After="999999999"), answer(200))
    try:
        with caplog.at_level(logging.WARNING, logger="ingest.binance"):
            scripted_client(exchange, clock, max_retry_after_s=120.0).klines("BTCUSDT", "1m")
    finally:
        exchange.close()
    assert 120.0 <= sum(clock.sleeps) <= 121.0
    assert any("429" in r.message and "120 s" in r.message for r in caplog.records)


def test_a_418_ban_is_honoured_and_its_resume_time_logged(clock, caplog):
    exchange = ScriptedExchange(answer(418, b'{"code":-1003,"msg":"banned"}', Retry_After="600"), answer(200))
    banned_at = clock.now
    try:
        with caplog.at_level(logging.CRITICAL, logger="ingest.binance"):
            klines, _ = scripted_client(exchange, clock).klines("BTCUSDT", "1m")
    finally:
        exchange.close()
    assert klines and clock.now - banned_at >= 600
    resume = datetime.fromtimestamp(banned_at + 600, UTC).isoformat(timespec="seconds")  # 2023-11-14T22:16:50
    assert any("418" in r.message and f"until {resume}" in r.message for r in caplog.records)


# -- total deadline and body size -------------------------------------------------------------------------------

def trickled(head: bytes, body: bytes, pause_s: float) -> tuple[bytes, bytes, float]:
    return head, body, pause_s


@pytest.mark.parametrize("where", ["body", "headers"])
def test_a_server_that_trickles_bytes_is_cut_off_at_the_total_deadline(clock, where):
    head, body, _ = answer(200, KLINE * 40)
    # every byte arrives well within the 2 s read timeout; the whole answer would take minutes
    exchange = ScriptedExchange(trickled(head, body, 0.05) if where == "body" else trickled(head * 50, body, 0.05))
    client = scripted_client(exchange, clock, read_timeout_s=2.0, request_deadline_s=0.6, max_attempts=1)
    started = time.monotonic()
    try:
        with pytest.raises(RequestFailed, match="DeadlineExceeded: no complete response within 0.6 s"):
            client.klines("BTCUSDT", "1m")
        elapsed = time.monotonic() - started
    finally:
        exchange.close()
    assert elapsed < 2.0  # the per-read timeout alone would never have ended it


def test_a_body_larger_than_the_limit_is_refused(clock):
    exchange = ScriptedExchange(answer(200, KLINE * 100))
    try:
        with pytest.raises(ResponseTooLarge, match="larger than 1000 bytes"):
            scripted_client(exchange, clock, max_body_bytes=1000).klines("BTCUSDT", "1m")
    finally:
        exchange.close()


# -- bad items and --once ----------------------------------------------------------------------------------------

def test_a_kline_out_of_range_is_rejected_by_name_and_the_others_kept(clock):
    good = b'[1700000000000,"1.0","1.0","1.0","1.0","1.0",1700000059999,"1.0",1,"1.0","1.0","0"]'
    out_of_range = good.replace(b"1700000059999", b"99999999999999999")
    exchange = ScriptedExchange(answer(200, b"[" + good + b"," + out_of_range + b"," + good + b"]"))
    try:
        klines, problems = scripted_client(exchange, clock).klines("BTCUSDT", "1m")
    finally:
        exchange.close()
    assert len(klines) == 2
    assert problems == ["kline BTCUSDT 1m[6] close_time: timestamp 99999999999999999 ms is outside years 1-9999"]


def test_poll_once_returns_1_when_every_request_failed_and_0_when_rows_were_fetched():
    with SimServer(symbols=5, seed=1, tick_s=0) as sim:
        clock = FakeClock()
        client = BinanceClient(ClientConfig(base_url=sim.url, max_attempts=2), clock=clock, sleep=clock.sleep)
        store = RecordingStore()
        assert Poller(PollConfig(("BTCUSDT",), depth=0, trades=0), client, store).run(once=True) == 0
        SimControl(sim.url).fault(status=500, count=None)
        assert Poller(PollConfig(("BTCUSDT",), depth=0, trades=0), client, store).run(once=True) == 1
        assert [len(batch) > 0 for batch in store.batches] == [True, False]


# -- PostgreSQL failure classes -------------------------------------------------------------------------------------

@pytest.mark.parametrize("sqlstate, kind", [
    ("08006", TRANSIENT), ("57P01", TRANSIENT), ("53300", TRANSIENT), ("40001", TRANSIENT), ("40P01", TRANSIENT),
    ("22003", ROW), ("22P02", ROW), ("23505", ROW), ("23514", ROW),
    ("42703", FATAL), ("42P01", FATAL), ("42501", FATAL), ("0A000", FATAL),
])
def test_postgres_errors_are_classified_by_sqlstate_class(sqlstate, kind):
    assert failure_kind(psycopg.errors.lookup(sqlstate)("message")) == kind


def test_a_connection_failure_without_sqlstate_is_transient():
    assert failure_kind(psycopg.OperationalError("connection refused")) == TRANSIENT
    assert failure_kind(pg.ServiceUnavailable("PostgreSQL unreachable")) == TRANSIENT
    assert failure_kind(psycopg.ProgrammingError("no sqlstate")) == FATAL


# -- the parsers' limits are the columns' ------------------------------------------------------------------------

def numeric_columns(table: str) -> dict[str, int]:
    """Integer digits (precision - scale) of each numeric column of `table`, read from sql/001_tables.sql."""
    text = (REPO / "sql" / "001_tables.sql").read_text()
    body = re.search(rf"CREATE TABLE IF NOT EXISTS {table} \((.*?)\n\);", text, re.S).group(1)
    return {name: int(p) - int(s) for name, p, s in re.findall(r"^\s*(\w+)\s+numeric\((\d+),(\d+)\)", body, re.M)}


TICKER = {"symbol": "BTCUSDT", **{key: "1.0" for key in TICKER_DECIMALS.values()}, "openTime": 1, "closeTime": 2,
          "firstId": 1, "lastId": 2, "count": 2}


@pytest.mark.parametrize("attr, key", TICKER_DECIMALS.items())
def test_a_ticker_field_takes_exactly_the_integer_digits_of_its_column(attr, key):
    digits = numeric_columns("ticker_24h")[attr]
    assert getattr(parse_ticker({**TICKER, key: "9" * digits + ".5"}), attr) == Decimal("9" * digits + ".5")
    with pytest.raises(MalformedPayload, match=f"ticker BTCUSDT.{key}: .* has {digits + 1} integer digits"):
        parse_ticker({**TICKER, key: "1" + "0" * digits})


@pytest.mark.parametrize("position, attr", [(p, a) for p, a in enumerate(KLINE_FIELDS)
                                            if a not in ("open_time", "close_time", "number_of_trades")])
def test_a_kline_field_takes_exactly_the_integer_digits_of_its_column(position, attr):
    digits = numeric_columns("klines")[attr]
    row = [1, "1", "1", "1", "1", "1", 2, "1", 3, "1", "1", "0"]
    assert getattr(parse_kline("BTCUSDT", "1m", row[:position] + ["9" * digits] + row[position + 1:]), attr)
    with pytest.raises(MalformedPayload, match=f"has {digits + 1} integer digits"):
        parse_kline("BTCUSDT", "1m", row[:position] + ["9" * (digits + 1)] + row[position + 1:])


@pytest.mark.parametrize("key, column", [("price", "price"), ("qty", "qty"), ("quoteQty", "quote_qty")])
def test_a_trade_field_takes_exactly_the_integer_digits_of_its_column(key, column):
    digits = numeric_columns("trades")[column]
    trade = {"id": 1, "price": "1", "qty": "1", "quoteQty": "1", "time": 1, "isBuyerMaker": True, "isBestMatch": True}
    assert parse_trade("BTCUSDT", {**trade, key: "9" * digits})
    with pytest.raises(MalformedPayload, match=f"trade BTCUSDT#1.{key}: .* has {digits + 1} integer digits"):
        parse_trade("BTCUSDT", {**trade, key: "9" * (digits + 1)})


def test_a_kline_trade_count_beyond_the_int_column_is_rejected():
    row = [1, "1", "1", "1", "1", "1", 2, "1", 2**31, "1", "1", "0"]
    with pytest.raises(MalformedPayload, match=r"number_of_trades: 2147483648 is outside"):
        parse_kline("BTCUSDT", "1m", row)
