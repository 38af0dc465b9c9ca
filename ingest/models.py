"""Typed Binance market data, parsed exactly from REST payloads (pure: no I/O).

Prices and quantities arrive as decimal strings and become `Decimal` straight from the string, never
via float. Integer fields are JSON numbers on live Binance but strings in some recordings (see
shared/fixtures/binance/README.md), so both are accepted. Anything else is a `MalformedPayload`
naming the field, so one bad item can be logged and skipped without stopping the rest.
"""

from __future__ import annotations

import re
import reprlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# Widest scale the PostgreSQL columns hold (numeric(p, 8)); more digits would be rounded there silently.
MAX_SCALE = 8
# Integer digits the columns of sql/001_tables.sql hold (precision - scale): a value beyond them would make
# PostgreSQL reject the row, so it is rejected here, named, before it reaches the cycle's transaction.
PRICE_DIGITS = 22  # numeric(30,8)
QUANTITY_DIGITS = 30  # numeric(38,8)
PERCENT_DIGITS = 12  # numeric(20,8): ticker_24h.price_change_percent
INT32 = (-2**31, 2**31 - 1)  # int: klines.number_of_trades
INT64 = (-2**63, 2**63 - 1)  # bigint: ids and counts
# Epoch milliseconds Python's datetime (years 1-9999) can hold; PostgreSQL's timestamptz holds all of them.
MIN_MILLIS = -62_135_596_800_000  # 0001-01-01T00:00:00Z
MAX_MILLIS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
# No Binance decimal or integer is near this long; longer text is rejected before any conversion, so a
# hostile response cannot make a parser spend time or memory on it.
MAX_NUMBER_TEXT = 64
_DECIMAL = re.compile(r"-?\d+(\.\d+)?")
_INTEGER = re.compile(r"-?\d+")
# Binance's own symbol pattern (error -1100 on /api/v3/ticker/24hr).
SYMBOL_PATTERN = re.compile(r"[A-Z0-9\-_.]{1,20}")
# Binance kline intervals (ENUM definitions); 1M is a calendar month.
KLINE_INTERVALS = ("1s", "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h",
                   "1d", "3d", "1w", "1M")


class MalformedPayload(ValueError):
    """A response (or one item of it) does not have the documented shape; the message says where."""


_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = _SHORT.maxlong = 40
_SHORT.maxlist = _SHORT.maxdict = _SHORT.maxtuple = 4
_SHORT.maxlevel = 2


def quote(value: Any) -> str:
    """A short repr for messages: a hostile value never floods a log line (nor is copied whole)."""
    if isinstance(value, str) and len(value) > 40:
        return f"{_SHORT.repr(value)} ({len(value)} characters)"
    try:
        return _SHORT.repr(value)
    except ValueError:  # an int too long for repr()
        return f"a {type(value).__name__}"


def parse_decimal(value: Any, field: str, integer_digits: int = PRICE_DIGITS) -> Decimal:
    """An exact Decimal from a Binance decimal string such as "73369.84000000", within its column's
    precision: at most `integer_digits` digits before the point and MAX_SCALE significant decimals."""
    if not isinstance(value, str) or len(value) > MAX_NUMBER_TEXT or not _DECIMAL.fullmatch(value):
        raise MalformedPayload(f"{field}: expected a decimal string, got {quote(value)}")
    number = Decimal(value)
    _, digits, exponent = number.as_tuple()
    assert isinstance(exponent, int), "the pattern admits finite decimals only"
    excess = -exponent - MAX_SCALE  # digits beyond the 8th decimal: only zeros may be there
    if excess > 0 and any(digits[-excess:]):
        raise MalformedPayload(f"{field}: {quote(value)} has more than {MAX_SCALE} decimals")
    whole = value.lstrip("-").split(".")[0].lstrip("0")
    if len(whole) > integer_digits:
        raise MalformedPayload(f"{field}: {quote(value)} has {len(whole)} integer digits; "
                               f"its column holds {integer_digits}")
    return number


def parse_quantity(value: Any, field: str) -> Decimal:
    return parse_decimal(value, field, QUANTITY_DIGITS)


def parse_int(value: Any, field: str, bounds: tuple[int, int] = INT64) -> int:
    """An integer given as a JSON number or as a string of digits (both occur), within `bounds`
    (its column's integer type)."""
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and len(value) <= MAX_NUMBER_TEXT and _INTEGER.fullmatch(value):
        number = int(value)
    else:
        raise MalformedPayload(f"{field}: expected an integer, got {quote(value)}")
    low, high = bounds
    if not low <= number <= high:
        raise MalformedPayload(f"{field}: {quote(number)} is outside its column's range {low}..{high}")
    return number


def parse_bool(value: Any, field: str) -> bool:
    if isinstance(value, bool):
        return value
    raise MalformedPayload(f"{field}: expected a boolean, got {quote(value)}")


def millis_to_datetime(ms: int) -> datetime:
    """UTC datetime of epoch milliseconds, exact (no float division)."""
    return EPOCH + timedelta(milliseconds=ms)


def datetime_to_millis(moment: datetime) -> int:
    delta = moment - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def parse_time(value: Any, field: str) -> datetime:
    """Epoch milliseconds as a UTC datetime; a time outside years 1-9999 is malformed, not an OverflowError."""
    ms = parse_int(value, field)
    if not MIN_MILLIS <= ms <= MAX_MILLIS:
        raise MalformedPayload(f"{field}: timestamp {ms} ms is outside years 1-9999")
    return millis_to_datetime(ms)


def _field(obj: Mapping[str, Any], key: str, where: str) -> Any:
    if not isinstance(obj, Mapping):
        raise MalformedPayload(f"{where}: expected an object, got {type(obj).__name__}")
    if key not in obj:
        raise MalformedPayload(f"{where}: missing field {key!r}")
    return obj[key]


@dataclass(frozen=True, slots=True)
class Ticker:
    """One /api/v3/ticker/24hr entry (FULL)."""

    symbol: str
    price_change: Decimal
    price_change_percent: Decimal
    weighted_avg_price: Decimal
    prev_close_price: Decimal
    last_price: Decimal
    last_qty: Decimal
    bid_price: Decimal
    bid_qty: Decimal
    ask_price: Decimal
    ask_qty: Decimal
    open_price: Decimal
    high_price: Decimal
    low_price: Decimal
    volume: Decimal
    quote_volume: Decimal
    open_time: datetime
    close_time: datetime
    first_id: int
    last_id: int
    trade_count: int

    @property
    def event_time(self) -> datetime:
        """The row's key time: Binance's closeTime of the rolling window."""
        return self.close_time


# Ticker attribute -> Binance JSON field, in Binance's order.
TICKER_DECIMALS = {
    "price_change": "priceChange", "price_change_percent": "priceChangePercent",
    "weighted_avg_price": "weightedAvgPrice", "prev_close_price": "prevClosePrice",
    "last_price": "lastPrice", "last_qty": "lastQty", "bid_price": "bidPrice", "bid_qty": "bidQty",
    "ask_price": "askPrice", "ask_qty": "askQty", "open_price": "openPrice", "high_price": "highPrice",
    "low_price": "lowPrice", "volume": "volume", "quote_volume": "quoteVolume",
}
TICKER_QUANTITIES = frozenset({"lastQty", "bidQty", "askQty", "volume", "quoteVolume"})
TICKER_TIMES = {"open_time": "openTime", "close_time": "closeTime"}
TICKER_INTS = {"first_id": "firstId", "last_id": "lastId", "trade_count": "count"}


def parse_ticker(obj: Mapping[str, Any]) -> Ticker:
    symbol = _field(obj, "symbol", "ticker")
    if not isinstance(symbol, str) or not SYMBOL_PATTERN.fullmatch(symbol):
        raise MalformedPayload(f"ticker: symbol {quote(symbol)} is not a Binance symbol")
    where = f"ticker {symbol}"
    values: dict[str, Any] = {"symbol": symbol}
    for attr, key in TICKER_DECIMALS.items():
        digits = (QUANTITY_DIGITS if key in TICKER_QUANTITIES
                  else PERCENT_DIGITS if key == "priceChangePercent" else PRICE_DIGITS)
        values[attr] = parse_decimal(_field(obj, key, where), f"{where}.{key}", digits)
    for attr, key in TICKER_TIMES.items():
        values[attr] = parse_time(_field(obj, key, where), f"{where}.{key}")
    for attr, key in TICKER_INTS.items():
        values[attr] = parse_int(_field(obj, key, where), f"{where}.{key}")
    return Ticker(**values)


@dataclass(frozen=True, slots=True)
class Kline:
    symbol: str
    interval: str
    open_time: datetime
    close_time: datetime
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    quote_volume: Decimal
    number_of_trades: int
    taker_buy_base_volume: Decimal
    taker_buy_quote_volume: Decimal


# Binance kline array positions (11 is an unused "0").
KLINE_FIELDS = ("open_time", "open", "high", "low", "close", "volume", "close_time", "quote_volume",
                "number_of_trades", "taker_buy_base_volume", "taker_buy_quote_volume")
KLINE_LENGTH = 12
KLINE_QUANTITIES = frozenset({"volume", "quote_volume", "taker_buy_base_volume", "taker_buy_quote_volume"})


def parse_kline(symbol: str, interval: str, row: Any) -> Kline:
    where = f"kline {symbol} {interval}"
    if not isinstance(row, list) or len(row) != KLINE_LENGTH:
        raise MalformedPayload(f"{where}: expected an array of {KLINE_LENGTH} elements, got {quote(row)}")
    values: dict[str, Any] = {"symbol": symbol, "interval": interval}
    for position, attr in enumerate(KLINE_FIELDS):
        label = f"{where}[{position}] {attr}"
        if attr.endswith("_time"):
            values[attr] = parse_time(row[position], label)
        elif attr == "number_of_trades":
            values[attr] = parse_int(row[position], label, INT32)
        else:
            values[attr] = parse_decimal(row[position], label,
                                         QUANTITY_DIGITS if attr in KLINE_QUANTITIES else PRICE_DIGITS)
    return Kline(**values)


@dataclass(frozen=True, slots=True)
class DepthLevel:
    """One price level of an order-book snapshot; level 0 is the best bid/ask."""

    symbol: str
    side: str  # "bid" or "ask"
    level: int
    price: Decimal
    quantity: Decimal
    last_update_id: int
    snapshot_time: datetime


def parse_depth(symbol: str, obj: Mapping[str, Any], snapshot_time: datetime) -> list[DepthLevel]:
    """Levels of a /api/v3/depth snapshot (which has no timestamp: `snapshot_time` is when it was taken)."""
    where = f"depth {symbol}"
    update_id = parse_int(_field(obj, "lastUpdateId", where), f"{where}.lastUpdateId")
    levels: list[DepthLevel] = []
    for side, key in (("bid", "bids"), ("ask", "asks")):
        rows = _field(obj, key, where)
        if not isinstance(rows, list):
            raise MalformedPayload(f"{where}.{key}: expected an array, got {quote(rows)}")
        for level, row in enumerate(rows):
            label = f"{where}.{key}[{level}]"
            if not isinstance(row, list) or len(row) != 2:
                raise MalformedPayload(f"{label}: expected [price, quantity], got {quote(row)}")
            levels.append(DepthLevel(symbol, side, level, parse_decimal(row[0], f"{label} price"),
                                     parse_quantity(row[1], f"{label} quantity"), update_id, snapshot_time))
    return levels


@dataclass(frozen=True, slots=True)
class Trade:
    """One /api/v3/trades entry."""

    symbol: str
    trade_id: int
    price: Decimal
    qty: Decimal
    quote_qty: Decimal
    trade_time: datetime
    is_buyer_maker: bool
    is_best_match: bool


def parse_trade(symbol: str, obj: Mapping[str, Any]) -> Trade:
    where = f"trade {symbol}"
    trade_id = parse_int(_field(obj, "id", where), f"{where}.id")
    where = f"trade {symbol}#{trade_id}"
    return Trade(
        symbol=symbol,
        trade_id=trade_id,
        price=parse_decimal(_field(obj, "price", where), f"{where}.price"),
        qty=parse_quantity(_field(obj, "qty", where), f"{where}.qty"),
        quote_qty=parse_quantity(_field(obj, "quoteQty", where), f"{where}.quoteQty"),
        trade_time=parse_time(_field(obj, "time", where), f"{where}.time"),
        is_buyer_maker=parse_bool(_field(obj, "isBuyerMaker", where), f"{where}.isBuyerMaker"),
        is_best_match=parse_bool(_field(obj, "isBestMatch", where), f"{where}.isBestMatch"),
    )


def parse_each(items: Any, parse, what: str) -> tuple[list, list[str]]:
    """Parse every item of a JSON array; a malformed item is reported and skipped, not fatal.

    Returns (parsed items, one message per skipped item)."""
    if not isinstance(items, list):
        raise MalformedPayload(f"{what}: expected an array, got {type(items).__name__}")
    parsed, problems = [], []
    for item in items:
        try:
            parsed.append(parse(item))
        except MalformedPayload as exc:
            problems.append(str(exc))
    return parsed, problems


def symbols_of(values: Sequence[str]) -> tuple[str, ...]:
    """Upper-cased, de-duplicated symbols in order; raises ValueError naming an invalid one."""
    seen: dict[str, None] = {}
    for raw in values:
        symbol = raw.strip().upper()
        if not SYMBOL_PATTERN.fullmatch(symbol):
            raise ValueError(f"invalid symbol {raw!r}: must match {SYMBOL_PATTERN.pattern}")
        seen.setdefault(symbol, None)
    return tuple(seen)
