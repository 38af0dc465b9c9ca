"""HTTP edge to the Binance Spot REST API: one `requests.Session`, request weights, rate limits, retries.

Every request passes one `RateLimiter`, so these rules hold for all endpoints at once:
- the used weight Binance reports in `X-MBX-USED-WEIGHT-1M` is tracked, and a request that would take the
  minute over our budget (default 5000 of Binance's 6000) waits for the next minute instead;
- 429 pauses every request for `Retry-After` seconds, capped (`max_retry_after_s`); 418 (IP ban) stops
  every request until `Retry-After` has passed (capped at Binance's longest ban, 3 days) and is logged as
  CRITICAL with the resume time. A `Retry-After` that is not a finite, non-negative number of seconds
  (negative, `nan`, `inf`, garbage) is ignored in favour of the default wait;
- 5xx, timeouts and connection errors are retried with exponential backoff and jitter, a bounded
  number of times;
- every request has a total deadline (`request_deadline_s`) besides the per-read timeout: a server that
  trickles bytes (each read within the timeout) is cut off when the deadline passes, and a body larger
  than `max_body_bytes` is refused, so one request's time and memory are bounded.
Error bodies `{"code": -1121, "msg": "Invalid symbol."}` become `InvalidSymbol`; a body that is not JSON
becomes `MalformedPayload`. Clock and sleep are injectable so tests need no real waiting.
"""

from __future__ import annotations

import logging
import math
import random
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import requests
from requests.adapters import HTTPAdapter
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from cdc_consumer.secrets import mask_url
from ingest.models import (
    DepthLevel,
    Kline,
    MalformedPayload,
    Ticker,
    Trade,
    datetime_to_millis,
    parse_depth,
    parse_each,
    parse_kline,
    parse_ticker,
    parse_trade,
)

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.binance.com"
WEIGHT_HEADER = "X-MBX-USED-WEIGHT-1M"
BINANCE_WEIGHT_LIMIT_1M = 6000
INVALID_SYMBOL_CODE = -1121
KLINES_WEIGHT = 2
TRADES_WEIGHT = 25
MAX_KLINES = 1000


def ticker_weight(symbol_count: int) -> int:
    """Weight of GET /api/v3/ticker/24hr with `symbols` (Binance: 2 for 1-20, 40 for 21-100, 80 above)."""
    return 2 if symbol_count <= 20 else 40 if symbol_count <= 100 else 80


def depth_weight(limit: int) -> int:
    """Weight of GET /api/v3/depth by `limit` (Binance: 5 up to 100, 25 up to 500, 50 up to 1000, else 250)."""
    return 5 if limit <= 100 else 25 if limit <= 500 else 50 if limit <= 1000 else 250


class BinanceError(Exception):
    """A request did not produce data; the message names the endpoint and symbol(s)."""


class InvalidSymbol(BinanceError):
    def __init__(self, symbols: Sequence[str], message: str):
        super().__init__(message)
        self.symbols = tuple(symbols)


class ApiError(BinanceError):
    """Binance answered with an error we do not retry (a 4xx other than 418/429)."""


class RequestFailed(BinanceError):
    """Retries were exhausted (5xx, timeouts, rate limiting)."""


class DeadlineExceeded(requests.Timeout):
    """A request (connect, headers and body together) took longer than its total deadline."""


class ResponseTooLarge(BinanceError):
    """A response body was larger than `max_body_bytes`."""


@dataclass(frozen=True)
class ClientConfig:
    base_url: str = DEFAULT_BASE_URL
    weight_budget: int = 5000  # per minute; keep headroom below Binance's 6000
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 10.0
    max_attempts: int = 5
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 30.0
    # 429 without Retry-After (Binance omits it for order-count limits): wait this long.
    default_retry_after_s: float = 60.0
    max_retry_after_s: float = 300.0  # a 429's wait never exceeds this, whatever Retry-After says
    max_ban_s: float = 3 * 86_400.0  # Binance's longest IP ban; a 418 is honoured up to this
    request_deadline_s: float = 30.0  # connect + headers + body of one request, however slowly bytes arrive
    max_body_bytes: int = 32 * 1024 * 1024  # 1000 tickers are ~0.6 MB

    def __post_init__(self) -> None:
        if not 0 < self.weight_budget <= BINANCE_WEIGHT_LIMIT_1M:
            raise ValueError(f"weight budget {self.weight_budget} must be in 1..{BINANCE_WEIGHT_LIMIT_1M}")
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"base URL {mask_url(self.base_url)[:60]!r} must start with http:// or https://")
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if not self.request_deadline_s > 0:
            raise ValueError("request_deadline_s must be positive")


class RateLimiter:
    """The one gate every request passes: per-minute weight budget, Retry-After pauses and IP bans."""

    def __init__(self, budget: int, clock: Callable[[], float], sleep: Callable[[float], None]):
        self.budget = budget
        self._clock = clock
        self._sleep = sleep
        self._minute = -1
        self.used = 0  # weight used in the current minute, as Binance last reported it (plus our sends)
        self.blocked_until = 0.0

    def acquire(self, weight: int) -> None:
        """Wait until a request of `weight` may be sent, then count it."""
        while True:
            now = self._clock()
            if now < self.blocked_until:
                self._sleep(self.blocked_until - now)
                continue
            self._roll(now)
            if self.used and self.used + weight > self.budget:
                wait = (self._minute + 1) * 60 - now + 0.05
                log.info("weight budget: %d + %d would exceed %d/min; pausing %.1f s until the next minute",
                         self.used, weight, self.budget, wait)
                self._sleep(wait)
                continue
            self.used += weight
            return

    def observe(self, header: str | None) -> None:
        """Adopt the weight Binance reports as used this minute (it also counts other clients on our IP)."""
        if header and header.isdigit():
            self._roll(self._clock())
            self.used = int(header)

    def pause(self, seconds: float) -> None:
        self.blocked_until = max(self.blocked_until, self._clock() + seconds)

    def _roll(self, now: float) -> None:
        minute = int(now // 60)
        if minute != self._minute:
            self._minute, self.used = minute, 0


@dataclass
class TickerResult:
    tickers: list[Ticker] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


class BinanceClient:
    def __init__(self, config: ClientConfig | None = None, *, session: requests.Session | None = None,
                 clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep,
                 jitter: Callable[[], float] = random.random):
        self.config = config or ClientConfig()
        self.session = session or deadline_session()
        self.session.headers.setdefault("User-Agent", "cdc-poller")
        self.limiter = RateLimiter(self.config.weight_budget, clock, sleep)
        self._clock = clock
        self._sleep = sleep
        self._jitter = jitter
        self.weight_sent = 0  # running total of request weight sent (for per-cycle reporting)

    def close(self) -> None:
        self.session.close()

    # -- endpoints --------------------------------------------------------------------------------------

    def tickers(self, symbols: Sequence[str]) -> TickerResult:
        """24h tickers of many symbols in one call.

        Binance fails the whole call when one symbol is invalid (-1121, without naming it). We then split
        the list in halves and retry each, so the bad symbol(s) are found by name in a few calls while the
        others' tickers still arrive; the caller is told which symbols are invalid.
        """
        if not symbols:
            return TickerResult()
        symbols = list(symbols)
        try:
            payload = self.get_json("/api/v3/ticker/24hr", {"symbols": compact_json(symbols)},
                                    ticker_weight(len(symbols)), symbols)
        except InvalidSymbol:
            if len(symbols) == 1:
                return TickerResult(invalid=symbols)
            middle = len(symbols) // 2
            left, right = self.tickers(symbols[:middle]), self.tickers(symbols[middle:])
            return TickerResult(left.tickers + right.tickers, left.invalid + right.invalid,
                                left.problems + right.problems)
        tickers, problems = parse_each(payload, parse_ticker, "ticker/24hr")
        return TickerResult(tickers, [], problems)

    def klines(self, symbol: str, interval: str, *, limit: int = MAX_KLINES,
               start: datetime | None = None) -> tuple[list[Kline], list[str]]:
        """Klines oldest first; from `start` (inclusive open time) when given, else the latest `limit`."""
        params: dict[str, Any] = {"symbol": symbol, "interval": interval, "limit": limit}
        if start is not None:
            params["startTime"] = datetime_to_millis(start)
        payload = self.get_json("/api/v3/klines", params, KLINES_WEIGHT, [symbol])
        return parse_each(payload, lambda row: parse_kline(symbol, interval, row), f"klines {symbol} {interval}")

    def depth(self, symbol: str, limit: int, snapshot_time: datetime) -> list[DepthLevel]:
        payload = self.get_json("/api/v3/depth", {"symbol": symbol, "limit": limit}, depth_weight(limit), [symbol])
        return parse_depth(symbol, payload, snapshot_time)

    def trades(self, symbol: str, limit: int) -> tuple[list[Trade], list[str]]:
        payload = self.get_json("/api/v3/trades", {"symbol": symbol, "limit": limit}, TRADES_WEIGHT, [symbol])
        return parse_each(payload, lambda item: parse_trade(symbol, item), f"trades {symbol}")

    # -- transport --------------------------------------------------------------------------------------

    def get_json(self, path: str, params: Mapping[str, Any], weight: int, symbols: Sequence[str]) -> Any:
        """GET with rate limiting and retries; the decoded JSON body of a 200."""
        what = f"{path} {','.join(symbols)}" if len(symbols) <= 3 else f"{path} ({len(symbols)} symbols)"
        failure = "no attempt made"
        for attempt in range(1, self.config.max_attempts + 1):
            self.limiter.acquire(weight)
            self.weight_sent += weight
            try:
                response, body = self._get(path, params, what)
            except (requests.Timeout, requests.ConnectionError) as exc:
                failure = f"{type(exc).__name__}: {exc}"
                self._backoff(attempt, what, failure)
                continue
            self.limiter.observe(response.headers.get(WEIGHT_HEADER))
            status = response.status_code
            if status == 200:
                return decode_json(body, what)
            failure = f"HTTP {status}"
            if status in (418, 429):
                self._rate_limited(status, response, what)
            elif status >= 500:
                self._backoff(attempt, what, failure)
            else:
                raise client_error(status, body, symbols, what)
        raise RequestFailed(f"{what}: gave up after {self.config.max_attempts} attempts ({failure})")

    def _get(self, path: str, params: Mapping[str, Any], what: str) -> tuple[requests.Response, bytes]:
        """One GET within the total deadline and the body size limit: (response, body)."""
        config = self.config
        late = DeadlineExceeded(f"no complete response within {config.request_deadline_s:g} s")
        with Watchdog(config.request_deadline_s) as watchdog:
            try:
                response = self.session.get(config.base_url + path, params=params, stream=True,
                                            timeout=(config.connect_timeout_s, config.read_timeout_s))
                with response:
                    body = read_body(response, config.max_body_bytes, what)
            except (requests.RequestException, OSError) as exc:
                if watchdog.expired:
                    raise late from exc
                if isinstance(exc, requests.RequestException):
                    raise
                raise requests.ConnectionError(str(exc)) from exc
        if watchdog.expired:  # cut off while the body had no declared length: it may be truncated
            raise late
        return response, body

    def _rate_limited(self, status: int, response: requests.Response, what: str) -> None:
        header = response.headers.get("Retry-After")
        wait = retry_after_seconds(header, self.config.default_retry_after_s)
        if status == 418:
            wait = min(wait, self.config.max_ban_s)
            self.limiter.pause(wait)
            resume = datetime.fromtimestamp(self.limiter.blocked_until, UTC).isoformat(timespec="seconds")
            log.critical("BINANCE IP BAN (HTTP 418) on %s: ALL requests stopped for %.0f s, until %s "
                         "(Retry-After %s); the request weight budget (%d/min) is too high for this IP",
                         what, wait, resume, quote_header(header), self.limiter.budget)
        else:
            wait = min(wait, self.config.max_retry_after_s)
            self.limiter.pause(wait)
            log.warning("rate limited (HTTP 429) on %s: pausing all requests for %.0f s (Retry-After %s)",
                        what, wait, quote_header(header))

    def _backoff(self, attempt: int, what: str, failure: str) -> None:
        if attempt >= self.config.max_attempts:
            return
        ceiling = min(self.config.backoff_cap_s, self.config.backoff_base_s * 2 ** (attempt - 1))
        delay = ceiling / 2 + self._jitter() * ceiling / 2  # "equal jitter": at least half the ceiling
        log.warning("%s failed (%s), attempt %d/%d; retrying in %.2f s", what, failure, attempt,
                    self.config.max_attempts, delay)
        self._sleep(delay)


def compact_json(symbols: Sequence[str]) -> str:
    """The `symbols` parameter as Binance wants it: a JSON array without spaces."""
    return orjson.dumps(list(symbols)).decode()


def decode_json(body: bytes, what: str) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedPayload(f"{what}: response is not JSON ({exc}): {body[:80]!r}") from exc


def retry_after_seconds(header: str | None, default: float) -> float:
    """Seconds from a Retry-After header; `default` unless it is a finite, non-negative number."""
    if header is None or len(header) > 32:
        return default
    try:
        seconds = float(header)
    except ValueError:
        return default
    return seconds if math.isfinite(seconds) and seconds >= 0 else default


def quote_header(header: str | None) -> str:
    return "absent" if header is None else repr(header[:32])


def client_error(status: int, body: bytes, symbols: Sequence[str], what: str) -> BinanceError:
    """The exception for a 4xx body such as {"code": -1121, "msg": "Invalid symbol."}."""
    try:
        document = orjson.loads(body)
        code, message = document.get("code"), document.get("msg")
    except (orjson.JSONDecodeError, AttributeError):
        code, message = None, body[:120].decode("utf-8", "replace")
    message = str(message)[:200]
    if code == INVALID_SYMBOL_CODE:
        return InvalidSymbol(symbols, f"{what}: invalid symbol ({message})")
    return ApiError(f"{what}: HTTP {status} code {str(code)[:20]}: {message}")


def read_body(response: requests.Response, limit: int, what: str) -> bytes:
    """The whole body, refusing more than `limit` bytes (whatever Content-Length claims)."""
    chunks, size = [], 0
    for chunk in response.iter_content(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise ResponseTooLarge(f"{what}: response body larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


# -- total request deadline ---------------------------------------------------------------------------------
# requests/urllib3 only have per-read timeouts: a server sending one byte every few seconds keeps a request
# alive forever. The watchdog below shuts the socket of the request in flight down when its deadline
# passes, which wakes the blocked read at once; the pools of `deadline_session()` tell it which socket that is.

_in_flight = threading.local()  # .watchdog: the Watchdog of this thread's current request


class Watchdog:
    """Context manager: cut the connection this thread uses if the block outlasts `seconds`."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.expired = False
        self._connection = None
        self._done = False
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None

    def __enter__(self) -> Watchdog:
        _in_flight.watchdog = self
        self._arm(self.seconds)
        return self

    def __exit__(self, *exc_info) -> None:
        with self._lock:
            self._done = True
            if self._timer is not None:
                self._timer.cancel()
        _in_flight.watchdog = None

    def watch(self, connection) -> None:
        self._connection = connection

    def _arm(self, seconds: float) -> None:
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def _expire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.expired = True
            sock = getattr(self._connection, "sock", None)
            if sock is None:  # still connecting (bounded by the connect timeout): look again shortly
                self._arm(0.05)
                return
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _WatchedPool(HTTPConnectionPool):
    def _get_conn(self, timeout=None):
        connection = super()._get_conn(timeout)
        watchdog = getattr(_in_flight, "watchdog", None)
        if watchdog is not None:
            watchdog.watch(connection)
        return connection


class _WatchedHTTPSPool(HTTPSConnectionPool, _WatchedPool):
    pass


class _DeadlineAdapter(HTTPAdapter):
    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _WatchedPool, "https": _WatchedHTTPSPool}


def deadline_session() -> requests.Session:
    """A requests.Session whose requests a `Watchdog` can cut off."""
    session = requests.Session()
    adapter = _DeadlineAdapter()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
