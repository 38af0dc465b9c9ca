"""A simulated Binance Spot REST API for offline demos and tests (`cdc binance-sim`).

It serves GET /api/v3/ticker/24hr, /klines, /depth, /trades (plus /ping and /time) with Binance's exact
response shapes: field names and order, decimals as strings with 8 decimals, klines as 12-element
arrays, integers as JSON numbers, `X-MBX-USED-WEIGHT-1M` on every response, 429 once the minute's weight
passes the limit, and Binance's error bodies (-1121 Invalid symbol, -1120 Invalid interval, ...).

Prices are a seeded random walk in exact Decimal arithmetic (a context that traps any rounding): each
market step, every symbol makes 0-4 trades with increasing ids; 24h statistics, every kline interval
(the open kline updates, new ones open as time passes) and the order book follow those trades.
With `tick_s > 0` the market steps by itself with the wall clock; with `tick_s = 0` it stands still
(time included) until `POST /__sim/step`, which makes polls repeatable in tests.

Control endpoints (tests, demo):
  POST   /__sim/faults   {"status": 429, "retry_after": 2, "count": 1}   answer the next matching request(s)
                         {"status": 418, "retry_after": 2} | {"status": 500, "count": 2} | {"delay_s": 3}
                         {"malformed": true} | {"unknown_symbol": "ETHUSDT"}; optional "path": "/api/v3/depth"
  GET    /__sim/faults   pending faults and unknown symbols
  DELETE /__sim/faults   clear all faults (and unknown symbols)
  POST   /__sim/step     {"steps": 1, "symbols": ["BTCUSDT"]}              advance the market
  POST   /__sim/moves    {"move": "BTCUSDT:+6%:60s"}                       scripted move (ingest/sim_moves.py)
  GET    /__sim/requests [{"time", "path", "query", "status"}, ...]        recent API requests received
"""

from __future__ import annotations

import logging
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Context, Decimal, Inexact, InvalidOperation, localcontext
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self, overload
from urllib.parse import parse_qs, urlsplit

import orjson
import requests

from ingest.binance import KLINES_WEIGHT, TRADES_WEIGHT, WEIGHT_HEADER, depth_weight, ticker_weight
from ingest.models import KLINE_INTERVALS, SYMBOL_PATTERN, datetime_to_millis, millis_to_datetime
from ingest.sim_moves import PriceMove, ScriptedMoves

log = logging.getLogger(__name__)

DAY_MS = 86_400_000
# Sums and products of 8-decimal values are exact at this precision; the trap turns any rounding into an error.
EXACT = Context(prec=60, traps=[Inexact, InvalidOperation])
ROUNDED = Context(prec=60, rounding=ROUND_HALF_EVEN, traps=[InvalidOperation])
EIGHT_DECIMALS = Decimal("1e-8")
PERCENT_DECIMALS = Decimal("0.001")
LOT = Decimal("1e-5")
HISTORY = 1000  # klines and trades kept per symbol (Binance's max limit)
ALL_TICKERS_WEIGHT = 80  # /api/v3/ticker/24hr without symbol(s)
NAMED_SYMBOLS = (("BTCUSDT", "43000.00", "0.01"), ("ETHUSDT", "2300.00", "0.01"), ("BNBUSDT", "310.0", "0.1"),
                 ("SOLUSDT", "98.00", "0.01"), ("XRPUSDT", "0.5200", "0.0001"))
_FIXED_INTERVAL_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": DAY_MS, "w": 7 * DAY_MS}
_MONDAY_OFFSET_MS = 4 * DAY_MS  # 1970-01-01 was a Thursday; weekly klines open on Mondays
_SYMBOLS_PARAM = re.compile(r'\[("[A-Z0-9\-_.]{1,20}"(,"[A-Z0-9\-_.]{1,20}")*)?\]')


def fmt(value: Decimal) -> str:
    """Binance's decimal string: fixed point, 8 decimals."""
    return f"{value:.8f}"


def symbol_names(count: int) -> list[str]:
    """BTCUSDT, ETHUSDT, ... then SYM001USDT, SYM002USDT, ... up to `count` symbols."""
    named = [name for name, _, _ in NAMED_SYMBOLS[:count]]
    return named + [f"SYM{i:03d}USDT" for i in range(1, count - len(named) + 1)]


# -- kline time buckets -------------------------------------------------------------------------------

def kline_open(interval: str, ms: int) -> int:
    """Open time of the `interval` kline containing `ms`."""
    if interval == "1M":
        moment = millis_to_datetime(ms)
        return datetime_to_millis(datetime(moment.year, moment.month, 1, tzinfo=UTC))
    length = interval_ms(interval)
    offset = _MONDAY_OFFSET_MS if interval.endswith("w") else 0
    return (ms - offset) // length * length + offset


def kline_next_open(interval: str, open_ms: int) -> int:
    if interval == "1M":
        moment = millis_to_datetime(open_ms)
        year, month = divmod(moment.year * 12 + moment.month, 12)  # month is 0-based here
        return datetime_to_millis(datetime(year, month + 1, 1, tzinfo=UTC))
    return open_ms + interval_ms(interval)


def interval_ms(interval: str) -> int:
    return int(interval[:-1]) * _FIXED_INTERVAL_MS[interval[-1]]


@dataclass
class SimKline:
    open_time: int
    close_time: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal = Decimal(0)
    quote_volume: Decimal = Decimal(0)
    trades: int = 0
    taker_base: Decimal = Decimal(0)
    taker_quote: Decimal = Decimal(0)

    def as_json(self) -> list:
        return [self.open_time, fmt(self.open), fmt(self.high), fmt(self.low), fmt(self.close), fmt(self.volume),
                self.close_time, fmt(self.quote_volume), self.trades, fmt(self.taker_base), fmt(self.taker_quote),
                "0"]


@dataclass
class SimTrade:
    id: int
    price: Decimal
    qty: Decimal
    quote_qty: Decimal
    time: int
    is_buyer_maker: bool

    def as_json(self) -> dict:
        return {"id": self.id, "price": fmt(self.price), "qty": fmt(self.qty), "quoteQty": fmt(self.quote_qty),
                "time": self.time, "isBuyerMaker": self.is_buyer_maker, "isBestMatch": True}


@dataclass
class SymbolState:
    symbol: str
    tick: Decimal
    rng: random.Random
    price: Decimal
    open_price: Decimal
    high: Decimal
    low: Decimal
    close_time: int
    volume: Decimal = Decimal(0)
    quote_volume: Decimal = Decimal(0)
    count: int = 0
    first_id: int = -1
    last_qty: Decimal = Decimal(0)
    update_id: int = 1
    trades: deque = field(default_factory=lambda: deque(maxlen=HISTORY))
    klines: dict[str, deque] = field(default_factory=dict)

    @property
    def last_id(self) -> int:
        return self.trades[-1].id if self.trades else -1


class SimMarket:
    """The simulated exchange's state. Not thread-safe by itself: the server serialises access with a lock."""

    def __init__(self, symbol_count: int, seed: int, now_ms: int):
        self.seed = seed
        self.now_ms = now_ms
        self.states = {name: self._new_symbol(name) for name in symbol_names(symbol_count)}
        self.moves = ScriptedMoves()
        for state in self.states.values():
            self._trade(state, 1)  # every symbol starts with one trade, so ids and stats are defined

    def _new_symbol(self, name: str) -> SymbolState:
        rng = random.Random(f"{self.seed}:{name}")
        named = {n: (p, t) for n, p, t in NAMED_SYMBOLS}
        if name in named:
            price, tick = Decimal(named[name][0]), Decimal(named[name][1])
        else:
            exponent = rng.randint(-6, -1)  # tick 1e-6 .. 0.1, price 5 significant digits
            tick = Decimal(f"1e{exponent}")
            price = Decimal(f"{rng.randint(10_000, 99_999)}e{exponent}")
        return SymbolState(name, tick, rng, price, price, price, price, self.now_ms)

    def step(self, now_ms: int | None = None, symbols: list[str] | None = None) -> None:
        """Advance the clock (to `now_ms`, else by one second) and let each (or each named) symbol trade."""
        self.now_ms = max(self.now_ms, now_ms if now_ms is not None else self.now_ms + 1000)
        self.moves.apply(self.states, self.now_ms)
        moving = self.moves.moving(self.now_ms)
        for name in symbols if symbols is not None else list(self.states):
            state = self.states[name]
            # a named or moving symbol always trades, so a test step (or each poll of a move) sees a change
            forced = symbols is not None or name in moving
            count = state.rng.choices((0, 1, 2, 3, 4), weights=(4, 3, 2, 1, 1))[0]
            self._trade(state, max(count, 1) if forced else count)

    def _trade(self, state: SymbolState, count: int) -> None:
        rng = state.rng
        for interval in KLINE_INTERVALS:  # open due klines at the pre-trade price first
            self._klines(state, interval)
        with localcontext(EXACT):
            for _ in range(count):
                moves = rng.randint(-3, 3) or 1
                state.price = max(state.tick * 10, state.price + state.tick * moves)  # floor keeps bids > 0
                qty = LOT * rng.randint(1, 50_000)
                quote = (state.price * qty).quantize(EIGHT_DECIMALS, context=ROUNDED)
                maker = rng.random() < 0.5
                trade = SimTrade(state.last_id + 1 if state.trades else rng.randint(10**6, 10**9),
                                 state.price, qty, quote, self.now_ms, maker)
                state.trades.append(trade)
                if state.first_id < 0:
                    state.first_id = trade.id
                state.count += 1
                state.volume += qty
                state.quote_volume += quote
                state.high, state.low = max(state.high, state.price), min(state.low, state.price)
                state.last_qty = qty
                state.update_id += 1 + rng.randint(0, 5)
                state.close_time = self.now_ms
                for interval in KLINE_INTERVALS:
                    self._add_to_kline(state, interval, trade)

    def _add_to_kline(self, state: SymbolState, interval: str, trade: SimTrade) -> None:
        kline = self._klines(state, interval)[-1]
        kline.high, kline.low, kline.close = max(kline.high, trade.price), min(kline.low, trade.price), trade.price
        kline.volume += trade.qty
        kline.quote_volume += trade.quote_qty
        kline.trades += 1
        if not trade.is_buyer_maker:  # the buyer was the taker
            kline.taker_base += trade.qty
            kline.taker_quote += trade.quote_qty

    def _klines(self, state: SymbolState, interval: str) -> deque:
        """The symbol's klines of `interval`, rolled forward (empty klines opened) up to now."""
        series = state.klines.setdefault(interval, deque(maxlen=HISTORY))
        current = kline_open(interval, self.now_ms)
        if not series:
            series.append(self._empty_kline(interval, current, state.price))
            return series
        # After a long pause only the buckets the deque can hold are worth creating.
        oldest_kept = kline_open(interval, self.now_ms - (HISTORY - 1) * interval_ms_approx(interval))
        open_time = max(kline_next_open(interval, series[-1].open_time), oldest_kept)
        while open_time <= current:
            series.append(self._empty_kline(interval, open_time, series[-1].close))
            open_time = kline_next_open(interval, open_time)
        return series

    @staticmethod
    def _empty_kline(interval: str, open_time: int, price: Decimal) -> SimKline:
        return SimKline(open_time, kline_next_open(interval, open_time) - 1, price, price, price, price)

    # -- Binance-shaped views ----------------------------------------------------------------------------

    def ticker(self, name: str) -> dict:
        s = self.states[name]
        bid, ask = self._book_side(s, "bid", 1)[0], self._book_side(s, "ask", 1)[0]
        with localcontext(ROUNDED):
            change = s.price - s.open_price
            percent = (change * 100 / s.open_price).quantize(PERCENT_DECIMALS)
            weighted = (s.quote_volume / s.volume).quantize(EIGHT_DECIMALS) if s.volume else s.price
        return {"symbol": name, "priceChange": fmt(change), "priceChangePercent": f"{percent:.3f}",
                "weightedAvgPrice": fmt(weighted), "prevClosePrice": fmt(s.open_price), "lastPrice": fmt(s.price),
                "lastQty": fmt(s.last_qty), "bidPrice": bid[0], "bidQty": bid[1], "askPrice": ask[0],
                "askQty": ask[1], "openPrice": fmt(s.open_price), "highPrice": fmt(s.high),
                "lowPrice": fmt(s.low), "volume": fmt(s.volume), "quoteVolume": fmt(s.quote_volume),
                "openTime": s.close_time - DAY_MS, "closeTime": s.close_time, "firstId": s.first_id,
                "lastId": s.last_id, "count": s.count}

    def klines(self, name: str, interval: str, start: int | None, end: int | None, limit: int) -> list[list]:
        series = [k for k in self._klines(self.states[name], interval)
                  if (start is None or k.open_time >= start) and (end is None or k.open_time <= end)]
        chosen = series[:limit] if start is not None else series[-limit:]
        return [k.as_json() for k in chosen]

    def depth(self, name: str, limit: int) -> dict:
        state = self.states[name]
        return {"lastUpdateId": state.update_id, "bids": self._book_side(state, "bid", limit),
                "asks": self._book_side(state, "ask", limit)}

    def trades(self, name: str, limit: int) -> list[dict]:
        return [t.as_json() for t in list(self.states[name].trades)[-limit:]]

    @staticmethod
    def _book_side(state: SymbolState, side: str, limit: int) -> list[list[str]]:
        """Top `limit` levels one tick apart around the last price; quantities derive from the update id,
        so the book changes exactly when the symbol trades."""
        with localcontext(EXACT):
            best, direction = (state.price - state.tick, -1) if side == "bid" else (state.price, 1)
            levels = []
            for level in range(limit):
                price = best + direction * level * state.tick
                if price <= 0:
                    break
                mixed = (state.update_id * 2_654_435_761 + level * 40_503 + (side == "ask") * 7919) % 199_999
                levels.append([fmt(price), fmt(LOT * (mixed + 1))])
        return levels


def interval_ms_approx(interval: str) -> int:
    """Length of an interval in ms (a month counts 31 days): bounds how far back empty klines are made."""
    return 31 * DAY_MS if interval == "1M" else interval_ms(interval)


# -- faults, weight, request log ---------------------------------------------------------------------------

@dataclass
class Fault:
    status: int | None = None
    retry_after: float | None = None
    delay_s: float = 0.0
    malformed: bool = False
    count: int | None = 1  # None: until cleared
    path: str | None = None  # only requests whose path starts with this

    @classmethod
    def from_json(cls, spec: Any) -> Fault:
        """A validated fault; ValueError naming the field otherwise (so a bad spec is an HTTP 400, and no
        accepted spec can hold a request longer than MAX_FAULT_DELAY_S or fail inside the request path)."""
        if not isinstance(spec, dict):
            raise ValueError(f"a fault is a JSON object, not {type(spec).__name__}")
        known = {"status", "retry_after", "delay_s", "malformed", "count", "path"}
        unknown = set(spec) - known - {"unknown_symbol"}
        if unknown:
            raise ValueError(f"unknown fault field(s) {sorted(map(str, unknown))[:5]}; "
                             f"known: {sorted(known | {'unknown_symbol'})}")
        fault = cls(**{k: v for k, v in spec.items() if k in known})
        fault._check()
        if fault.status is None and not fault.delay_s and not fault.malformed and "unknown_symbol" not in spec:
            raise ValueError("the fault does nothing: give status, delay_s, malformed or unknown_symbol")
        return fault

    def _check(self) -> None:
        if self.status is not None and not (_is_int(self.status) and 400 <= self.status <= 599):
            raise ValueError(f"fault status {self.status!r} must be an HTTP error status 400..599")
        if self.retry_after is not None and not _is_number(self.retry_after, 0, MAX_FAULT_RETRY_AFTER_S):
            raise ValueError(f"fault retry_after must be a number of seconds in 0..{MAX_FAULT_RETRY_AFTER_S}")
        if not _is_number(self.delay_s, 0, MAX_FAULT_DELAY_S):
            raise ValueError(f"fault delay_s must be a number of seconds in 0..{MAX_FAULT_DELAY_S}")
        if not isinstance(self.malformed, bool):
            raise ValueError("fault malformed must be true or false")
        if self.count is not None and not (_is_int(self.count) and 1 <= self.count <= MAX_FAULT_COUNT):
            raise ValueError(f"fault count must be an integer in 1..{MAX_FAULT_COUNT} (or null: until cleared)")
        if self.path is not None and not (isinstance(self.path, str) and self.path.startswith("/")
                                          and len(self.path) <= 200):
            raise ValueError("fault path must be a URL path such as /api/v3/depth")


# Bounds of fault specs: a fault can slow or fail requests, never hold the server.
MAX_FAULT_DELAY_S = 60.0
MAX_FAULT_RETRY_AFTER_S = 3 * 86_400
MAX_FAULT_COUNT = 1_000_000
MAX_CONTROL_BODY = 64 * 1024  # bytes of a control request body
MAX_STEPS = 10_000  # market steps per /__sim/step request (the market lock is held meanwhile)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any, low: float, high: float) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value <= high


class SimState:
    """Market + faults + weight meter + request log behind one lock (the HTTP server is threaded)."""

    def __init__(self, market: SimMarket, weight_limit: int = 6000, clock=time.time):
        self.market = market
        self.weight_limit = weight_limit
        self.lock = threading.Lock()
        self.faults: list[Fault] = []
        self.unknown_symbols: set[str] = set()
        self.requests: deque = deque(maxlen=10_000)
        self._clock = clock
        self._minute = -1
        self._used = 0

    def add_fault(self, spec: dict) -> None:
        fault = Fault.from_json(spec)
        if "unknown_symbol" in spec and not (isinstance(spec["unknown_symbol"], str)
                                             and SYMBOL_PATTERN.fullmatch(spec["unknown_symbol"])):
            raise ValueError(f"fault unknown_symbol must be a symbol matching {SYMBOL_PATTERN.pattern}")
        with self.lock:
            if "unknown_symbol" in spec:
                self.unknown_symbols.add(spec["unknown_symbol"])
            if fault.status is not None or fault.delay_s or fault.malformed:
                self.faults.append(fault)

    def clear_faults(self) -> None:
        with self.lock:
            self.faults.clear()
            self.unknown_symbols.clear()

    def add_move(self, spec: object) -> None:
        """Start a scripted price move (`BTCUSDT:+6%:60s`, see ingest.sim_moves); ValueError if invalid."""
        move = PriceMove.parse(spec)
        with self.lock:
            if move.symbol not in self.market.states:
                raise ValueError(f"move {spec!r}: unknown symbol {move.symbol}")
            self.market.moves.add(move, self.market.now_ms)

    def take_fault(self, path: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.path is None or path.startswith(fault.path):
                    if fault.count is not None:
                        fault.count -= 1
                        if fault.count <= 0:
                            self.faults.remove(fault)
                    return fault
        return None

    def spend(self, weight: int) -> int:
        """Count a request's weight in the current wall-clock minute; the minute's total."""
        with self.lock:
            minute = int(self._clock() // 60)
            if minute != self._minute:
                self._minute, self._used = minute, 0
            self._used += weight
            return self._used

    def seconds_to_next_minute(self) -> int:
        return max(1, int(60 - self._clock() % 60) + 1)


# -- HTTP --------------------------------------------------------------------------------------------------

class SimError(Exception):
    """A Binance error answer: HTTP status + {"code", "msg"} body."""

    def __init__(self, status: int, code: int, msg: str):
        super().__init__(msg)
        self.status, self.code, self.msg = status, code, msg


def _mandatory(query: dict, name: str) -> str:
    values = query.get(name)
    if not values or not values[0]:
        raise SimError(400, -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")
    return values[0]


@overload
def _optional_int(query: dict, name: str, default: int, low: int = 0, high: int | None = None) -> int: ...
@overload
def _optional_int(query: dict, name: str, default: None, low: int = 0, high: int | None = None) -> int | None: ...
def _optional_int(query: dict, name: str, default: int | None, low: int = 0, high: int | None = None) -> int | None:
    if not query.get(name):
        return default
    raw = query[name][0]
    if not re.fullmatch(r"-?\d+", raw):
        raise SimError(400, -1100, f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'.")
    value = int(raw)
    if value < low or (high is not None and value > high):
        raise SimError(400, -1100, f"Illegal characters found in parameter '{name}'; legal range is "
                                   f"'{low}..{high}'.")
    return value


class SimHandler(BaseHTTPRequestHandler):
    server_version = "binance-sim"
    protocol_version = "HTTP/1.1"  # keep-alive, as the real API (requests.Session reuses connections)
    # Headers and body leave in one write (buffered, flushed per request) with Nagle off: otherwise each
    # response waits ~40 ms for the client's delayed ACK.
    wbufsize = -1
    disable_nagle_algorithm = True
    sim: SimState  # set on the per-server subclass SimServer makes

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    # -- routing --

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/__sim/requests":
            with self.sim.lock:
                received = list(self.sim.requests)
            self._send(200, received)
            return
        if url.path == "/__sim/faults":
            with self.sim.lock:
                faults = {"faults": [dict(vars(f)) for f in self.sim.faults],
                          "unknown_symbols": sorted(self.sim.unknown_symbols)}
            self._send(200, faults)
            return
        self._api(url.path, parse_qs(url.query, keep_blank_values=True), url.query)

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        try:
            body = orjson.loads(self._control_body() or b"{}")
            if path == "/__sim/faults":
                self.sim.add_fault(body)
                self._send(200, {"ok": True})
            elif path == "/__sim/step":
                self._step(body)
            elif path == "/__sim/moves":
                self.sim.add_move(body.get("move") if isinstance(body, dict) else None)
                self._send(200, {"ok": True})
            else:
                self._send(404, {"code": -1, "msg": f"no control endpoint {path}"})
        except (orjson.JSONDecodeError, ValueError, TypeError, KeyError) as exc:
            self.close_connection = True  # the body may not have been read: do not parse it as a request
            self._send(400, {"code": -1, "msg": f"bad control request: {str(exc)[:300]}"})

    def _control_body(self) -> bytes:
        """The request body, read only when its declared length is sane (a missing, negative or huge
        Content-Length would otherwise block the handler or fill memory)."""
        raw = self.headers.get("Content-Length") or "0"
        if not raw.isdigit() or int(raw) > MAX_CONTROL_BODY:
            raise ValueError(f"Content-Length must be an integer in 0..{MAX_CONTROL_BODY}")
        return self.rfile.read(int(raw))

    def do_DELETE(self) -> None:
        path = urlsplit(self.path).path
        if path == "/__sim/faults":
            self.sim.clear_faults()
        elif path == "/__sim/requests":
            with self.sim.lock:
                self.sim.requests.clear()
        else:
            self._send(404, {"code": -1, "msg": f"no control endpoint {path}"})
            return
        self._send(200, {"ok": True})

    def _step(self, body: Any) -> None:
        if not isinstance(body, dict):
            raise ValueError("a step request is a JSON object")
        steps, symbols = body.get("steps", 1), body.get("symbols")
        if not (_is_int(steps) and 1 <= steps <= MAX_STEPS):
            raise ValueError(f"steps must be an integer in 1..{MAX_STEPS}")
        if symbols is not None and not (isinstance(symbols, list) and all(isinstance(s, str) for s in symbols)):
            raise ValueError("symbols must be a list of symbol names")
        with self.sim.lock:
            unknown = [s for s in symbols or [] if s not in self.sim.market.states]
            if unknown:
                raise ValueError(f"unknown symbols {unknown[:5]}")
            for _ in range(steps):
                self.sim.market.step(symbols=symbols)
            now_ms = self.sim.market.now_ms
        self._send(200, {"time": now_ms})

    # -- Binance API --

    def _api(self, path: str, query: dict, raw_query: str) -> None:
        status = 200
        try:
            weight, build = self._route(path, query)
            used = self.sim.spend(weight)
            fault = self.sim.take_fault(path)
            if fault and fault.delay_s:
                time.sleep(fault.delay_s)
            if used > self.sim.weight_limit:
                raise SimError(429, -1003, f"Too much request weight used; current limit is "
                                           f"{self.sim.weight_limit} request weight per 1 MINUTE.")
            if fault and fault.status:
                status = fault.status
                self._fault_answer(fault, status, used)
                return
            with self.sim.lock:
                payload = build()
            body = orjson.dumps(payload)
            if fault and fault.malformed:
                body = body[: max(1, len(body) // 2)]  # cut mid-document: not JSON
            self._send_bytes(200, body, used)
        except SimError as exc:
            status = exc.status
            headers = {"Retry-After": str(self.sim.seconds_to_next_minute())} if exc.status == 429 else {}
            self._send(exc.status, {"code": exc.code, "msg": exc.msg}, self.sim.spend(0), headers)
        finally:
            with self.sim.lock:
                self.sim.requests.append({"time": time.time(), "path": path, "query": raw_query, "status": status})

    def _fault_answer(self, fault: Fault, status: int, used: int) -> None:
        headers = {} if fault.retry_after is None else {"Retry-After": str(fault.retry_after)}
        if status == 418:
            body = {"code": -1003, "msg": "Way too much request weight used; IP banned until "
                                          f"{int((time.time() + (fault.retry_after or 120)) * 1000)}."}
        elif status == 429:
            body = {"code": -1003, "msg": "Too much request weight used; please use WebSocket Streams."}
        else:
            body = {"code": -1001, "msg": "Internal error; unable to process your request. Please try again."}
        self._send(status, body, used, headers)

    def _route(self, path: str, query: dict):
        """(weight, payload builder) of an API request; raises SimError for Binance's 4xx answers."""
        market = self.sim.market
        if path == "/api/v3/ping":
            return 1, dict
        if path == "/api/v3/time":
            return 1, lambda: {"serverTime": market.now_ms}
        if path == "/api/v3/ticker/24hr":
            return self._ticker_route(query)
        if path not in ("/api/v3/klines", "/api/v3/depth", "/api/v3/trades"):
            raise SimError(404, -1, f"no such endpoint {path}")
        symbol = self._symbol(_mandatory(query, "symbol"))
        if path == "/api/v3/klines":
            interval = _mandatory(query, "interval")
            if interval not in KLINE_INTERVALS:
                raise SimError(400, -1120, "Invalid interval.")
            limit = _optional_int(query, "limit", 500, 1, 1000)
            start, end = _optional_int(query, "startTime", None), _optional_int(query, "endTime", None)
            return KLINES_WEIGHT, lambda: market.klines(symbol, interval, start, end, limit)
        if path == "/api/v3/depth":
            limit = _optional_int(query, "limit", 100, 1, 5000)
            return depth_weight(limit), lambda: market.depth(symbol, limit)
        limit = _optional_int(query, "limit", 500, 1, 1000)
        return TRADES_WEIGHT, lambda: market.trades(symbol, limit)

    def _ticker_route(self, query: dict):
        market = self.sim.market
        if query.get("symbol"):
            symbol = self._symbol(query["symbol"][0])
            return ticker_weight(1), lambda: market.ticker(symbol)
        if "symbols" not in query:
            return ALL_TICKERS_WEIGHT, lambda: [market.ticker(s) for s in market.states]
        raw = query["symbols"][0]
        if not _SYMBOLS_PARAM.fullmatch(raw):
            raise SimError(400, -1100, "Illegal characters found in parameter 'symbols'; legal range is "
                                       f"'{_SYMBOLS_PARAM.pattern}'.")
        symbols = [self._symbol(s) for s in orjson.loads(raw)]  # one bad symbol fails the whole call
        return ticker_weight(len(symbols)), lambda: [market.ticker(s) for s in symbols]

    def _symbol(self, name: str) -> str:
        if not SYMBOL_PATTERN.fullmatch(name):
            raise SimError(400, -1100, "Illegal characters found in parameter 'symbol'; legal range is "
                                       f"'^{SYMBOL_PATTERN.pattern}$'.")
        if name not in self.sim.market.states or name in self.sim.unknown_symbols:
            raise SimError(400, -1121, "Invalid symbol.")
        return name

    # -- output --

    def _send(self, status: int, payload: Any, used: int | None = None, headers: dict | None = None) -> None:
        self._send_bytes(status, orjson.dumps(payload), used, headers)

    def _send_bytes(self, status: int, body: bytes, used: int | None, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json;charset=UTF-8")
        self.send_header("Content-Length", str(len(body)))
        if used is not None:
            self.send_header(WEIGHT_HEADER, str(used))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


class SimServer:
    """The HTTP server plus (when tick_s > 0) the thread that steps the market with the wall clock."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, symbols: int = 20, seed: int = 1,
                 tick_s: float = 1.0, weight_limit: int = 6000, start_ms: int | None = None):
        start_ms = int(time.time() * 1000) if start_ms is None else start_ms
        self.state = SimState(SimMarket(symbols, seed, start_ms), weight_limit)
        handler = type("BoundSimHandler", (SimHandler,), {"sim": self.state})
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self.tick_s = tick_s
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        host, port = self.httpd.socket.getsockname()[:2]
        return f"http://{host}:{port}"

    def start(self) -> Self:
        """Serve in background threads (for in-process use)."""
        self._spawn(self._serve)
        if self.tick_s > 0:
            self._spawn(self._ticker)
        return self

    def serve_forever(self) -> None:
        if self.tick_s > 0:
            self._spawn(self._ticker)
        self.httpd.serve_forever()

    def stop(self) -> None:
        self._stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        for thread in self._threads:
            thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def _serve(self) -> None:
        self.httpd.serve_forever(poll_interval=0.05)  # stop() returns within 50 ms

    def _spawn(self, target) -> None:
        thread = threading.Thread(target=target, daemon=True, name=f"binance-sim-{target.__name__}")
        thread.start()
        self._threads.append(thread)

    def _ticker(self) -> None:
        """Step every tick; the market clock runs at wall-clock speed from its start time."""
        started, start_ms = time.monotonic(), self.state.market.now_ms
        while not self._stop.wait(self.tick_s):
            with self.state.lock:
                self.state.market.step(start_ms + int((time.monotonic() - started) * 1000))


class SimControl:
    """Client of the control endpoints, for tests and demo scripts."""

    def __init__(self, url: str):
        self.url = url

    def fault(self, **spec: Any) -> None:
        requests.post(f"{self.url}/__sim/faults", json=spec, timeout=5).raise_for_status()

    def clear_faults(self) -> None:
        requests.delete(f"{self.url}/__sim/faults", timeout=5).raise_for_status()

    def step(self, symbols: list[str] | None = None, steps: int = 1) -> int:
        body: dict[str, Any] = {"steps": steps, **({"symbols": symbols} if symbols is not None else {})}
        response = requests.post(f"{self.url}/__sim/step", json=body, timeout=5)
        response.raise_for_status()
        return response.json()["time"]

    def requests_received(self) -> list[dict]:
        response = requests.get(f"{self.url}/__sim/requests", timeout=5)
        response.raise_for_status()
        return response.json()

    def forget_requests(self) -> None:
        requests.delete(f"{self.url}/__sim/requests", timeout=5).raise_for_status()

    def move(self, spec: str) -> None:
        requests.post(f"{self.url}/__sim/moves", json={"move": spec}, timeout=5).raise_for_status()


class SimProcess(SimControl):
    """`cdc binance-sim` run as a child process on a free port, as a context manager."""

    def __init__(self, *, symbols: int = 20, seed: int = 1, tick: str = "0", extra: tuple[str, ...] = ()):
        super().__init__("")
        self.args = [sys.executable, "-m", "cdc_cli.cli", "binance-sim", "--port", "0", "--symbols",
                     str(symbols), "--seed", str(seed), "--tick", tick, *extra]
        self.process: subprocess.Popen | None = None
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - the child writes here until __exit__

    def __enter__(self) -> Self:
        self.process = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=self._log, text=True)
        assert self.process.stdout is not None  # stdout=PIPE
        first_line = self.process.stdout.readline()  # the simulator prints its URL once it listens
        match = re.search(r"http://\S+", first_line)
        if not match:
            self.__exit__()
            self._log.seek(0)
            raise RuntimeError(f"binance-sim did not start: {first_line!r} {self._log.read()[-500:]!r}")
        self.url = match.group(0)
        return self

    def __exit__(self, *exc_info) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
