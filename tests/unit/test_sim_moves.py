"""Scripted simulator price moves: spec validation and the price path (oracle: literal arithmetic)."""

from __future__ import annotations

from decimal import Decimal

import pytest
import requests
from click.testing import CliRunner

from cdc_cli.cli import main
from ingest.sim import SimMarket, SimServer
from ingest.sim_moves import PriceMove

START_MS = 1_700_000_000_000


def test_parse_move_specs():
    assert PriceMove.parse("BTCUSDT:+6%:60s") == PriceMove("BTCUSDT", Decimal("6"), 60_000, 0)
    assert PriceMove.parse("ETHUSDT:-3.5%:30s@10s") == PriceMove("ETHUSDT", Decimal("-3.5"), 30_000, 10_000)


@pytest.mark.parametrize("spec", ["BTCUSDT:6%:60s", "BTCUSDT:+6:60s", "BTCUSDT:+6%:60", "btcusdt:+6%:60s",
                                  "BTCUSDT:+0%:60s", "BTCUSDT:-100%:60s", "BTCUSDT:+6%:0s", "BTCUSDT:+101%:1s",
                                  "BTCUSDT:+6%:60s@", "", "BTCUSDT:+6.12345%:60s"])
def test_bad_move_specs_are_named(spec):
    with pytest.raises(ValueError, match="move"):
        PriceMove.parse(spec)


def test_move_follows_its_path_and_other_symbols_stay_put():
    market = SimMarket(5, seed=7, now_ms=START_MS)
    before = {name: state.price for name, state in market.states.items()}
    market.moves.add(PriceMove.parse("BTCUSDT:+6%:60s@5s"), market.now_ms)
    for second in range(1, 5):
        market.step(START_MS + second * 1000)
    assert abs(market.states["BTCUSDT"].price - before["BTCUSDT"]) < Decimal("1")  # not started yet
    start_price = market.states["BTCUSDT"].price
    for second in range(5, 36):
        market.step(START_MS + second * 1000)
    halfway = start_price * Decimal("1.03")  # 30 of 60 s
    assert abs(market.states["BTCUSDT"].price - halfway) <= Decimal("0.12")  # 4 trades x 3 ticks of 0.01
    for second in range(36, 70):
        market.step(START_MS + second * 1000)
    assert abs(market.states["BTCUSDT"].price - start_price * Decimal("1.06")) <= Decimal("0.12")
    assert market.moves.running == []
    for name in ("ETHUSDT", "BNBUSDT", "SOLUSDT", "XRPUSDT"):
        assert abs(market.states[name].price - before[name]) / before[name] < Decimal("0.01")
    assert Decimal(market.ticker("BTCUSDT")["lastPrice"]) == market.states["BTCUSDT"].price


def test_control_endpoint_validates_and_starts_a_move():
    with SimServer(symbols=3, seed=1, tick_s=0, start_ms=START_MS) as server:
        bad = requests.post(f"{server.url}/__sim/moves", json={"move": "BTCUSDT:6%"}, timeout=5)
        assert bad.status_code == 400 and "SYMBOL:+P%:Ns" in bad.json()["msg"]
        unknown = requests.post(f"{server.url}/__sim/moves", json={"move": "DOGEUSDT:+6%:1s"}, timeout=5)
        assert unknown.status_code == 400 and "unknown symbol DOGEUSDT" in unknown.json()["msg"]
        assert requests.post(f"{server.url}/__sim/moves", json={"move": "ETHUSDT:-10%:2s"}, timeout=5).ok
        requests.post(f"{server.url}/__sim/step", json={"steps": 3}, timeout=5).raise_for_status()
        price = Decimal(requests.get(f"{server.url}/api/v3/ticker/24hr", params={"symbol": "ETHUSDT"},
                                     timeout=5).json()["lastPrice"])
        assert abs(price - Decimal("2070.00")) <= Decimal("0.5")  # 2300 * 0.9 after the 2 s move


def test_cli_rejects_a_bad_move_with_usage_error():
    result = CliRunner().invoke(main, ["binance-sim", "--port", "0", "--move", "BTCUSDT:+6"])
    assert result.exit_code == 2
    assert "--move" in result.output and "SYMBOL:+P%:Ns" in result.output
