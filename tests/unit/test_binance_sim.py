"""The simulated exchange answers with Binance's exact shapes, moves deterministically, and limits weight."""

from __future__ import annotations

import json
import re
from decimal import Decimal

import pytest
import requests

from ingest.models import KLINE_INTERVALS, millis_to_datetime, parse_depth, parse_kline, parse_ticker, parse_trade
from ingest.sim import SimControl, SimMarket, SimServer, kline_next_open, kline_open, symbol_names
from tests.support import fixtures_dir

EIGHT_DECIMALS = re.compile(r"-?\d+\.\d{8}")


def fixture(name: str):
    return json.loads((fixtures_dir() / "binance" / name).read_text())[0]["response"]


@pytest.fixture()
def sim():
    with SimServer(symbols=8, seed=11, tick_s=0, weight_limit=200) as server:
        yield server


def get(sim: SimServer, path: str, **params) -> requests.Response:
    return requests.get(sim.url + path, params=params, timeout=5)


def test_ticker_has_binance_field_names_in_binance_order_with_8_decimal_strings_and_int_numbers(sim):
    (ticker,) = get(sim, "/api/v3/ticker/24hr", symbols='["BTCUSDT"]').json()
    assert list(ticker) == list(fixture("ticker_24hr.json"))
    for key in ("lastPrice", "bidPrice", "askQty", "volume", "quoteVolume", "weightedAvgPrice"):
        assert EIGHT_DECIMALS.fullmatch(ticker[key]), key
    assert re.fullmatch(r"-?\d+\.\d{3}", ticker["priceChangePercent"])  # Binance sends 3 decimals here
    for key in ("openTime", "closeTime", "firstId", "lastId", "count"):
        assert type(ticker[key]) is int, key
    assert parse_ticker(ticker).symbol == "BTCUSDT"


def test_single_symbol_ticker_is_an_object_and_many_are_an_array(sim):
    assert get(sim, "/api/v3/ticker/24hr", symbol="ETHUSDT").json()["symbol"] == "ETHUSDT"
    both = get(sim, "/api/v3/ticker/24hr", symbols='["ETHUSDT","BTCUSDT"]').json()
    assert [t["symbol"] for t in both] == ["ETHUSDT", "BTCUSDT"]


def test_klines_are_12_element_arrays_typed_like_the_fixture(sim):
    rows = get(sim, "/api/v3/klines", symbol="BTCUSDT", interval="1m", limit=5).json()
    expected_types = [type(v) for v in fixture("klines.json")[0]]
    assert rows and all([type(v) for v in row] == expected_types for row in rows)
    assert all(row[11] == "0" for row in rows)
    kline = parse_kline("BTCUSDT", "1m", rows[-1])
    assert kline.close_time == millis_to_datetime(rows[-1][0] + 59_999)


def test_depth_and_trades_have_the_documented_shapes(sim):
    depth = get(sim, "/api/v3/depth", symbol="BTCUSDT", limit=5).json()
    assert list(depth) == list(fixture("depth.json"))
    assert type(depth["lastUpdateId"]) is int and len(depth["bids"]) == len(depth["asks"]) == 5
    bids = [Decimal(p) for p, _ in depth["bids"]]
    asks = [Decimal(p) for p, _ in depth["asks"]]
    assert bids == sorted(bids, reverse=True) and asks == sorted(asks) and bids[0] < asks[0]
    parse_depth("BTCUSDT", depth, millis_to_datetime(0))
    trades = get(sim, "/api/v3/trades", symbol="BTCUSDT", limit=10).json()
    assert list(trades[0]) == ["id", "price", "qty", "quoteQty", "time", "isBuyerMaker", "isBestMatch"]
    assert parse_trade("BTCUSDT", trades[0]).price > 0


def test_every_response_reports_the_minute_weight_and_429_follows_the_limit(sim):
    used = [int(get(sim, "/api/v3/trades", symbol="BTCUSDT").headers["X-MBX-USED-WEIGHT-1M"]) for _ in range(8)]
    assert used[:8] == [25 * n for n in range(1, 9)]  # 200 = the configured limit: still allowed
    over = get(sim, "/api/v3/trades", symbol="BTCUSDT")
    assert over.status_code == 429
    assert over.json()["code"] == -1003
    assert int(over.headers["Retry-After"]) >= 1


@pytest.mark.parametrize("path, params, code", [
    ("/api/v3/trades", {"symbol": "FOOUSDT"}, -1121),
    ("/api/v3/ticker/24hr", {"symbols": '["BTCUSDT","FOOUSDT"]'}, -1121),  # one bad symbol fails all
    ("/api/v3/ticker/24hr", {"symbols": '["BTCUSDT", "ETHUSDT"]'}, -1100),  # spaces are illegal
    ("/api/v3/klines", {"symbol": "BTCUSDT", "interval": "7x"}, -1120),
    ("/api/v3/klines", {"symbol": "BTCUSDT"}, -1102),
])
def test_bad_requests_get_binance_error_codes(sim, path, params, code):
    response = get(sim, path, **params)
    assert response.status_code == 400
    assert response.json()["code"] == code


def test_an_unknown_symbol_fault_delists_a_known_symbol_until_cleared(sim):
    control = SimControl(sim.url)
    control.fault(unknown_symbol="ETHUSDT")
    assert get(sim, "/api/v3/depth", symbol="ETHUSDT").json() == {"code": -1121, "msg": "Invalid symbol."}
    control.clear_faults()
    assert get(sim, "/api/v3/depth", symbol="ETHUSDT").status_code == 200


def test_same_seed_same_market_other_seed_other_market():
    first, second, other = (SimMarket(6, seed=seed, now_ms=1_700_000_000_000) for seed in (3, 3, 4))
    for market in (first, second, other):
        for _ in range(50):
            market.step()
    assert first.ticker("BTCUSDT") == second.ticker("BTCUSDT") != other.ticker("BTCUSDT")
    assert first.trades("SYM001USDT", 100) == second.trades("SYM001USDT", 100) != other.trades("SYM001USDT", 100)


def test_without_a_step_nothing_changes_and_a_step_moves_only_the_named_symbol():
    market = SimMarket(3, seed=1, now_ms=1_700_000_000_000)
    before = {s: market.ticker(s) for s in market.states}
    assert {s: market.ticker(s) for s in market.states} == before
    market.step(symbols=["BTCUSDT"])
    after = {s: market.ticker(s) for s in market.states}
    assert after["BTCUSDT"] != before["BTCUSDT"]
    assert {s: t for s, t in after.items() if s != "BTCUSDT"} == {s: t for s, t in before.items() if s != "BTCUSDT"}


def test_klines_progress_with_time_the_open_one_updating_and_new_ones_opening():
    market = SimMarket(1, seed=2, now_ms=1_700_000_000_000)  # 22:13:20 UTC
    first = market.klines("BTCUSDT", "1m", None, None, 10)
    for _ in range(30):
        market.step(symbols=["BTCUSDT"])  # 30 s later: same minute
    same_minute = market.klines("BTCUSDT", "1m", None, None, 10)
    assert [k[0] for k in same_minute] == [k[0] for k in first]
    assert same_minute[-1][8] > first[-1][8]  # more trades in the open kline
    for _ in range(60):
        market.step(symbols=["BTCUSDT"])
    later = market.klines("BTCUSDT", "1m", None, None, 10)
    assert len(later) == 2 and later[1][0] == later[0][0] + 60_000
    assert later[1][1] == later[0][4]  # the new kline opens at the previous close


def test_trade_ids_increase_and_volumes_add_up_exactly():
    market = SimMarket(1, seed=4, now_ms=1_700_000_000_000)
    for _ in range(200):
        market.step()
    trades = market.trades("BTCUSDT", 1000)
    ids = [t["id"] for t in trades]
    assert ids == list(range(ids[0], ids[0] + len(ids)))
    ticker = market.ticker("BTCUSDT")
    assert Decimal(ticker["volume"]) == sum(Decimal(t["qty"]) for t in trades)
    assert ticker["count"] == len(trades) and ticker["lastId"] == ids[-1]


@pytest.mark.parametrize("interval", KLINE_INTERVALS)
def test_kline_buckets_contain_their_time_and_chain(interval):
    moment = 1_709_251_199_999  # 2024-02-29 23:59:59.999 (leap day, month end)
    opened = kline_open(interval, moment)
    assert opened <= moment < kline_next_open(interval, opened)
    assert kline_open(interval, kline_next_open(interval, opened)) == kline_next_open(interval, opened)


def test_weekly_klines_open_on_monday_and_monthly_on_the_first():
    assert millis_to_datetime(kline_open("1w", 1_709_251_199_999)).weekday() == 0
    assert millis_to_datetime(kline_open("1M", 1_709_251_199_999)).day == 1


def test_symbol_names_start_with_real_ones_then_synthetic():
    assert symbol_names(7) == ["BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT", "XRPUSDT", "SYM001USDT", "SYM002USDT"]
