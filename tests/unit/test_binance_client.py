"""The Binance client against the in-process simulated exchange, with a fake clock (no real waiting)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from urllib.parse import parse_qs, unquote

import pytest

from ingest.binance import (
    ApiError,
    BinanceClient,
    ClientConfig,
    InvalidSymbol,
    RateLimiter,
    RequestFailed,
    compact_json,
    depth_weight,
    ticker_weight,
)
from ingest.models import MalformedPayload
from ingest.sim import SimControl, SimServer


class FakeClock:
    """Wall-clock seconds that only move when someone sleeps."""

    def __init__(self, start: float = 1_700_000_010.0):
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture()
def sim():
    with SimServer(symbols=30, seed=7, tick_s=0) as server:
        yield server


@pytest.fixture()
def control(sim) -> SimControl:
    return SimControl(sim.url)


@pytest.fixture()
def clock() -> FakeClock:
    return FakeClock()


def client_for(sim: SimServer, clock: FakeClock, **config) -> BinanceClient:
    return BinanceClient(ClientConfig(base_url=sim.url, **config), clock=clock, sleep=clock.sleep,
                         jitter=lambda: 0.5)


def test_many_tickers_come_from_one_call_with_a_compact_json_symbols_parameter(sim, control, clock):
    result = client_for(sim, clock).tickers(["BTCUSDT", "ETHUSDT", "SYM001USDT"])
    assert [t.symbol for t in result.tickers] == ["BTCUSDT", "ETHUSDT", "SYM001USDT"]
    (request,) = control.requests_received()
    assert request["path"] == "/api/v3/ticker/24hr"
    assert parse_qs(request["query"])["symbols"] == ['["BTCUSDT","ETHUSDT","SYM001USDT"]']
    assert "%5B%22BTCUSDT%22" in request["query"]  # URL-encoded on the wire


def test_compact_json_has_no_spaces():
    assert compact_json(["A", "B"]) == '["A","B"]'


@pytest.mark.parametrize("count, weight", [(1, 2), (20, 2), (21, 40), (100, 40), (101, 80)])
def test_ticker_weight_follows_binance_tiers(count, weight):
    assert ticker_weight(count) == weight


@pytest.mark.parametrize("limit, weight", [(5, 5), (100, 5), (101, 25), (500, 25), (1000, 50), (5000, 250)])
def test_depth_weight_follows_binance_tiers(limit, weight):
    assert depth_weight(limit) == weight


def test_used_weight_is_read_from_the_response_header(sim, clock):
    client = client_for(sim, clock)
    client.klines("BTCUSDT", "1m", limit=5)
    client.trades("BTCUSDT", 10)
    assert client.limiter.used == 2 + 25  # what the simulator reported, not a local guess
    assert client.weight_sent == 27


def test_a_request_that_would_pass_the_budget_waits_for_the_next_minute(sim, control, clock):
    client = client_for(sim, clock, weight_budget=60)
    client.trades("BTCUSDT", 10)
    client.trades("BTCUSDT", 10)  # 50 used
    assert clock.sleeps == []
    client.trades("BTCUSDT", 10)  # 75 > 60: must wait for the minute to turn
    assert len(clock.sleeps) == 1
    assert clock.now // 60 == 1_700_000_010 // 60 + 1
    assert len(control.requests_received()) == 3


def test_429_pauses_at_least_retry_after_then_retries(sim, control, clock):
    control.fault(status=429, retry_after=2, count=1)
    client = client_for(sim, clock)
    klines, _ = client.klines("BTCUSDT", "1m", limit=2)
    assert klines
    assert sum(clock.sleeps) >= 2
    assert [r["status"] for r in control.requests_received()] == [429, 200]


def test_418_stops_every_request_until_retry_after_and_logs_critically(sim, control, clock, caplog):
    control.fault(status=418, retry_after=120, count=1, path="/api/v3/depth")
    client = client_for(sim, clock, max_attempts=1)
    banned_at = clock.now
    with caplog.at_level(logging.CRITICAL, logger="ingest.binance"), pytest.raises(RequestFailed):
        client.depth("BTCUSDT", 5, datetime.now(UTC))
    assert any("418" in r.message and "ALL requests stopped" in r.message for r in caplog.records)
    client.trades("BTCUSDT", 1)  # another endpoint: held back until the ban is over
    assert clock.now - banned_at >= 120
    assert [(r["path"], r["status"]) for r in control.requests_received()] == [
        ("/api/v3/depth", 418), ("/api/v3/trades", 200)]


def test_5xx_is_retried_with_growing_backoff_then_succeeds(sim, control, clock):
    control.fault(status=500, count=2)
    trades, _ = client_for(sim, clock).trades("BTCUSDT", 5)
    assert trades
    assert [r["status"] for r in control.requests_received()] == [500, 500, 200]
    assert clock.sleeps == sorted(clock.sleeps) and clock.sleeps[1] > clock.sleeps[0]


def test_5xx_retries_are_bounded(sim, control, clock):
    control.fault(status=503, count=None)
    with pytest.raises(RequestFailed, match="gave up after 3 attempts"):
        client_for(sim, clock, max_attempts=3).trades("BTCUSDT", 5)
    assert len(control.requests_received()) == 3


def test_a_timeout_is_retried(sim, control, clock):
    control.fault(delay_s=0.5, count=1)
    trades, _ = client_for(sim, clock, read_timeout_s=0.1).trades("BTCUSDT", 5)
    assert trades
    assert len(clock.sleeps) == 1


def test_an_invalid_symbol_in_a_multi_symbol_call_is_isolated_and_named(sim, clock):
    symbols = ["BTCUSDT", "ETHUSDT", "FOOUSDT"] + [f"SYM{i:03d}USDT" for i in range(1, 8)]
    result = client_for(sim, clock).tickers(symbols)
    assert result.invalid == ["FOOUSDT"]
    assert sorted(t.symbol for t in result.tickers) == sorted(s for s in symbols if s != "FOOUSDT")


def test_an_invalid_symbol_on_a_single_symbol_endpoint_raises_naming_it(sim, clock):
    with pytest.raises(InvalidSymbol, match="FOOUSDT") as caught:
        client_for(sim, clock).trades("FOOUSDT", 5)
    assert caught.value.symbols == ("FOOUSDT",)


def test_other_client_errors_are_not_retried(sim, control, clock):
    with pytest.raises(ApiError, match="-1120"):
        client_for(sim, clock).klines("BTCUSDT", "7x")
    assert len(control.requests_received()) == 1


def test_a_malformed_body_raises_malformed_payload(sim, control, clock):
    control.fault(malformed=True, count=1)
    with pytest.raises(MalformedPayload, match="not JSON"):
        client_for(sim, clock).trades("BTCUSDT", 5)


def test_klines_resume_from_a_start_time(sim, control, clock):
    control.step(steps=120)  # two minutes of market
    client = client_for(sim, clock)
    latest, _ = client.klines("BTCUSDT", "1m", limit=3)
    resumed, _ = client.klines("BTCUSDT", "1m", start=latest[1].open_time)
    assert [k.open_time for k in resumed] == [k.open_time for k in latest[1:]]
    assert "startTime=" in unquote(control.requests_received()[-1]["query"])


def test_rate_limiter_rejects_a_budget_over_binances_limit():
    with pytest.raises(ValueError, match="6000"):
        ClientConfig(weight_budget=7000)


def test_rate_limiter_forgets_used_weight_when_the_minute_turns(clock):
    limiter = RateLimiter(100, clock, clock.sleep)
    limiter.observe("95")
    clock.now += 60
    limiter.acquire(50)
    assert clock.sleeps == []
    assert limiter.used == 50
