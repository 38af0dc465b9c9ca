"""Property-based fuzzing of the Binance response parsers (issue 15).

Whatever JSON a hostile or broken exchange sends, the parsers either return models whose values fit the
PostgreSQL columns or raise `MalformedPayload` — nothing else escapes (no OverflowError, no ValueError from
int(), no TypeError) — and each example stays within a CPU-time bound. Values near and
beyond the column limits are generated on purpose, next to arbitrary JSON.
"""

from __future__ import annotations

import functools
import json
import time
import tracemalloc
from datetime import UTC, datetime
from decimal import Decimal, localcontext

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.binance import decode_json
from ingest.models import (
    INT32,
    INT64,
    KLINE_FIELDS,
    MAX_SCALE,
    PERCENT_DIGITS,
    PRICE_DIGITS,
    QUANTITY_DIGITS,
    TICKER_DECIMALS,
    TICKER_INTS,
    TICKER_TIMES,
    Kline,
    MalformedPayload,
    Ticker,
    parse_depth,
    parse_each,
    parse_kline,
    parse_ticker,
    parse_trade,
)

# No wall-clock deadline: on a loaded CI machine waiting for a core is not the parser's time (hypothesis
# reports a slow-then-fast example as Flaky). Each example's CPU time is bounded instead (cpu_bounded).
FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CPU_SECONDS_PER_EXAMPLE = 0.5


def cpu_bounded(test):
    """The example's CPU time (this thread's) stays under CPU_SECONDS_PER_EXAMPLE: a parser whose work grows
    with a number the input chooses (digits, nesting) fails here even when it allocates nothing."""
    @functools.wraps(test)
    def bounded(*args, **kwargs):
        started = time.thread_time()
        test(*args, **kwargs)
        cpu = time.thread_time() - started
        assert cpu < CPU_SECONDS_PER_EXAMPLE, f"{cpu:.3f} s of CPU for one example"
    return bounded
SNAPSHOT = datetime(2024, 1, 1, tzinfo=UTC)

# Near and beyond the limits: long digit runs, huge and negative integers, many decimals, exponents.
hostile_numbers = st.one_of(
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.from_regex(r"-?[0-9]{1,45}(\.[0-9]{1,12})?", fullmatch=True),
    st.integers(min_value=10**10, max_value=10**40).map(str),  # around the 12/22/30 integer-digit limits
    st.integers(min_value=10**10, max_value=10**40).map(lambda n: f"{n}.5"),
    st.integers(min_value=4300, max_value=5000).map(lambda n: "7" * n),  # past Python's int() digit limit
    st.sampled_from(["NaN", "Infinity", "-0", "1e5", "0x10", "١٢٣", " 1", "1 ", "+1", ".5", "5.", ""]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
)
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=30)),
    lambda children: st.one_of(st.lists(children, max_size=5), st.dictionaries(st.text(max_size=10), children,
                                                                                 max_size=5)),
    max_leaves=20,
)
anything = st.one_of(hostile_numbers, json_values)
# Mostly valid field values, so the later fields of an item are reached too.
valid_decimal = st.decimals(min_value=-(10**12), max_value=10**12, places=8).map(lambda d: format(d, "f"))
valid_int = st.integers(min_value=0, max_value=2**40)
decimal_field = st.one_of(valid_decimal, valid_decimal, valid_decimal, hostile_numbers)
int_field = st.one_of(valid_int, valid_int, valid_int, hostile_numbers)


def one_spoiled(valid: st.SearchStrategy, positions: list) -> st.SearchStrategy:
    """A valid item with exactly one field (or array position) replaced by a hostile value: every field's
    check is reached, not only the first one's."""
    def spoil(item, position, value):
        item[position] = value
        return item
    return st.builds(spoil, valid, st.sampled_from(positions), hostile_numbers)


def ticker_like() -> st.SearchStrategy[dict]:
    valid = st.fixed_dictionaries({"symbol": st.just("BTCUSDT"),
                                   **{key: valid_decimal for key in TICKER_DECIMALS.values()},
                                   **{key: valid_int for key in (*TICKER_TIMES.values(), *TICKER_INTS.values())}})
    mixed = st.fixed_dictionaries({"symbol": st.one_of(st.just("BTCUSDT"), anything),
                                   **{key: decimal_field for key in TICKER_DECIMALS.values()},
                                   **{key: int_field for key in (*TICKER_TIMES.values(), *TICKER_INTS.values())}})
    keys = [*TICKER_DECIMALS.values(), *TICKER_TIMES.values(), *TICKER_INTS.values()]
    return st.one_of(one_spoiled(valid, keys), mixed)


def integer_digits(value: Decimal) -> int:
    whole = abs(value).to_integral_value(rounding="ROUND_DOWN")
    return 0 if whole == 0 else len(whole.as_tuple().digits)


def assert_fits(value: Decimal, digits: int) -> None:
    assert value.is_finite()
    assert integer_digits(value) <= digits
    with localcontext() as exact:
        exact.prec = 100  # 30 integer digits + 8 decimals do not fit the default 28 digits
        assert value == value.quantize(Decimal(1).scaleb(-MAX_SCALE))  # no significant digit past the 8th decimal


@FUZZ
@given(ticker_like())
@cpu_bounded
def test_a_ticker_either_fits_its_columns_or_is_malformed(item):
    try:
        ticker = parse_ticker(item)
    except MalformedPayload:
        return
    assert isinstance(ticker, Ticker)
    for attr in TICKER_DECIMALS:
        digits = (PERCENT_DIGITS if attr == "price_change_percent"
                  else QUANTITY_DIGITS if attr.endswith(("qty", "volume")) else PRICE_DIGITS)
        assert_fits(getattr(ticker, attr), digits)
    assert all(INT64[0] <= v <= INT64[1] for v in (ticker.first_id, ticker.last_id, ticker.trade_count))
    assert 1 <= ticker.close_time.year <= 9999


@FUZZ
@given(one_spoiled(st.tuples(valid_int, *[valid_decimal] * 5, valid_int, valid_decimal, valid_int, valid_decimal,
                             valid_decimal, st.just("0")).map(list), list(range(11)))
       | st.tuples(int_field, *[decimal_field] * 5, int_field, decimal_field, int_field, decimal_field,
                   decimal_field, anything).map(list) | anything)
@cpu_bounded
def test_a_kline_either_fits_its_columns_or_is_malformed(row):
    try:
        kline = parse_kline("BTCUSDT", "1m", row)
    except MalformedPayload:
        return
    assert isinstance(kline, Kline)
    assert INT32[0] <= kline.number_of_trades <= INT32[1]
    for attr in KLINE_FIELDS:
        value = getattr(kline, attr)
        if isinstance(value, Decimal):
            assert_fits(value, QUANTITY_DIGITS if "volume" in attr else PRICE_DIGITS)


@FUZZ
@given(one_spoiled(st.fixed_dictionaries({"id": valid_int, "price": valid_decimal, "qty": valid_decimal,
                                          "quoteQty": valid_decimal, "time": valid_int, "isBuyerMaker": st.booleans(),
                                          "isBestMatch": st.booleans()}),
                   ["id", "price", "qty", "quoteQty", "time", "isBuyerMaker", "isBestMatch"])
       | anything)
@cpu_bounded
def test_a_trade_either_parses_or_is_malformed(item):
    try:
        trade = parse_trade("BTCUSDT", item)
    except MalformedPayload:
        return
    assert_fits(trade.price, PRICE_DIGITS)
    assert_fits(trade.qty, QUANTITY_DIGITS)


@FUZZ
@given(st.fixed_dictionaries({"lastUpdateId": int_field,
                              "bids": st.lists(one_spoiled(st.tuples(valid_decimal, valid_decimal).map(list), [0, 1]),
                                               max_size=3),
                              "asks": st.lists(st.lists(decimal_field, min_size=1, max_size=3), max_size=4)})
       | anything)
@cpu_bounded
def test_a_depth_snapshot_either_parses_or_is_malformed(payload):
    try:
        levels = parse_depth("BTCUSDT", payload, SNAPSHOT)
    except MalformedPayload:
        return
    for level in levels:
        assert_fits(level.price, PRICE_DIGITS)
        assert_fits(level.quantity, QUANTITY_DIGITS)


@FUZZ
@given(st.binary(max_size=300) | st.lists(ticker_like(), max_size=4).map(lambda items: json.dumps(items).encode()))
@cpu_bounded
def test_a_whole_response_body_gives_tickers_and_named_problems_or_is_malformed(body):
    """decode + parse_each, as the client runs them: one problem per bad item, the good ones kept."""
    try:
        payload = decode_json(body, "ticker/24hr")
        tickers, problems = parse_each(payload, parse_ticker, "ticker/24hr")
    except MalformedPayload:
        return
    assert len(tickers) + len(problems) == len(payload)
    assert all(len(problem) < 300 for problem in problems)  # quotes are short, whatever the value


def test_a_huge_number_text_is_rejected_without_copying_it():
    """Bounded memory: rejecting a 5 MB digit string allocates nothing near its size."""
    huge = "9" * 5_000_000
    item = {"id": 1, "price": huge, "qty": "1", "quoteQty": "1", "time": 1, "isBuyerMaker": True,
            "isBestMatch": True}
    tracemalloc.start()
    try:
        parse_trade("BTCUSDT", item)
    except MalformedPayload as exc:
        message = str(exc)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 100_000 and len(message) < 200
    assert "price" in message and "5000000 characters" in message
