"""Parsing Binance payloads into typed, exact models (recorded fixtures and live-shaped variants)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from ingest.models import (
    MalformedPayload,
    datetime_to_millis,
    millis_to_datetime,
    parse_decimal,
    parse_depth,
    parse_each,
    parse_int,
    parse_kline,
    parse_ticker,
    parse_trade,
    symbols_of,
)
from tests.support import fixtures_dir


def fixture(name: str):
    return json.loads((fixtures_dir() / "binance" / name).read_text())[0]["response"]


def test_ticker_fixture_parses_to_exact_decimals_and_string_encoded_ints():
    ticker = parse_ticker(fixture("ticker_24hr.json"))
    assert ticker.symbol == "BTCUSDT"
    assert ticker.last_price == Decimal("73369.84000000")
    assert ticker.quote_volume == Decimal("5167027510.68728707")  # 18 significant digits, kept exactly
    assert ticker.price_change_percent == Decimal("1.647")
    assert (ticker.first_id, ticker.last_id, ticker.trade_count) == (3476288989, 3479476926, 3187938)
    assert ticker.event_time == ticker.close_time == datetime(2024, 3, 13, 11, 10, 45, 391000, tzinfo=UTC)


def test_ticker_accepts_ints_as_json_numbers_as_live_binance_sends_them():
    payload = fixture("ticker_24hr.json")
    live = {**payload, **{k: int(payload[k]) for k in ("openTime", "closeTime", "firstId", "lastId", "count")}}
    assert parse_ticker(live) == parse_ticker(payload)


def test_klines_fixture_parses_all_twelve_positions_in_binance_order():
    rows = fixture("klines.json")
    kline = parse_kline("BTCUSDT", "1h", rows[0])
    assert kline.open_time == millis_to_datetime(1706630400000)
    assert kline.close_time == millis_to_datetime(1706633999999)
    assert (kline.open, kline.high, kline.low, kline.close) == (
        Decimal("43519.34"), Decimal("43936.00"), Decimal("43171.00"), Decimal("43488.71"))
    assert kline.quote_volume == Decimal("891428.42858070")
    assert kline.number_of_trades == 3743
    assert kline.taker_buy_quote_volume == Decimal("473782.95739920")


def test_depth_fixture_gives_levels_per_side_best_first():
    taken = datetime(2024, 1, 1, tzinfo=UTC)
    levels = parse_depth("BTCUSDT", fixture("depth.json"), taken)
    assert [(lv.side, lv.level, lv.price) for lv in levels] == [
        ("bid", 0, Decimal("42574.30")), ("bid", 1, Decimal("42574.20")),
        ("ask", 0, Decimal("42574.31")), ("ask", 1, Decimal("42574.80"))]
    assert {lv.last_update_id for lv in levels} == {25445101}
    assert {lv.snapshot_time for lv in levels} == {taken}


def test_trade_parses_the_api_v3_trades_shape():
    trade = parse_trade("BTCUSDT", {"id": 28457, "price": "4.00000100", "qty": "12.00000000",
                                    "quoteQty": "48.000012", "time": 1499865549590, "isBuyerMaker": True,
                                    "isBestMatch": True})
    assert trade.trade_id == 28457
    assert trade.quote_qty == Decimal("48.000012")
    assert trade.trade_time == millis_to_datetime(1499865549590)
    assert trade.is_buyer_maker is True


@pytest.mark.parametrize("value", [73369.84, "7e3", "1,5", "", None, "NaN", "Infinity", "0.123456789"])
def test_a_price_that_is_not_an_exact_8_decimal_string_is_malformed(value):
    with pytest.raises(MalformedPayload, match="lastPrice"):
        parse_decimal(value, "lastPrice")


def test_trailing_zeros_beyond_eight_decimals_lose_nothing_and_are_accepted():
    assert parse_decimal("1.1000000000", "p") == Decimal("1.1")


@pytest.mark.parametrize("value", [True, 1.5, "12a", None])
def test_an_integer_field_rejects_non_integers(value):
    with pytest.raises(MalformedPayload, match="count"):
        parse_int(value, "count")


def test_a_missing_field_is_named():
    payload = dict(fixture("ticker_24hr.json"))
    del payload["askQty"]
    with pytest.raises(MalformedPayload, match="ticker BTCUSDT: missing field 'askQty'"):
        parse_ticker(payload)


def test_a_short_kline_array_is_malformed():
    with pytest.raises(MalformedPayload, match="12 elements"):
        parse_kline("BTCUSDT", "1m", fixture("klines.json")[0][:11])


def test_parse_each_skips_malformed_items_and_reports_them():
    good = fixture("ticker_24hr.json")
    parsed, problems = parse_each([good, {"symbol": "ETHUSDT"}, good], parse_ticker, "ticker/24hr")
    assert len(parsed) == 2
    assert len(problems) == 1 and "ETHUSDT" in problems[0]


def test_millisecond_times_round_trip_exactly():
    for ms in (0, 1499865549590, 1710328245391, 253402300799999):
        assert datetime_to_millis(millis_to_datetime(ms)) == ms


def test_symbols_are_upper_cased_deduplicated_and_validated():
    assert symbols_of(["btcusdt", " ETHUSDT", "BTCUSDT"]) == ("BTCUSDT", "ETHUSDT")
    with pytest.raises(ValueError, match="BTC USDT"):
        symbols_of(["BTC USDT"])
