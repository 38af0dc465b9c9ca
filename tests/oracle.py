"""An oracle for the replicated Cassandra tables that shares no code with the write path.

`cdc verify` builds its expected rows through the project's mapping and conversions; a conversion bug
would show on both sides of that comparison. This module imports nothing from `cdc_consumer`: the
expected rows are derived from PostgreSQL by the SQL written out below (the other engine converts), and
the actual rows are read from Cassandra with plain CQL.

The conversions, one by one, as the Cassandra schema documents them:
- bucket dates: the UTC day of a timestamp; for klines of one hour or longer the first day of the UTC
  month — compared as 'YYYY-MM-DD' text;
- timestamps: epoch milliseconds, floored — PostgreSQL's exact numeric `extract(epoch ...)` against
  Cassandra's own `toUnixTimestamp`;
- `*_us` tie-breaks: the exact epoch microseconds;
- chart doubles: PostgreSQL's correctly rounded `numeric::float8`, bit for bit;
- `*_exact` decimals: PostgreSQL's text of the numeric, digit for digit including its scale, against the
  plain (non-exponent) text of Cassandra's decimal;
- latest_prices: the ticker_24h row with the newest event_time of each symbol.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg

SUB_HOUR_INTERVALS = "'1s', '1m', '3m', '5m', '15m', '30m'"
HOUR_OR_LONGER_INTERVALS = "'1h', '2h', '4h', '6h', '8h', '12h', '1d', '3d', '1w', '1M'"
PAGE_SIZE = 5000


def _as_is(value: Any) -> Any:
    return value


def _date_text(value: Any) -> str | None:
    return None if value is None else str(value)


def _decimal_text(value: Any) -> str | None:
    return None if value is None else format(value, "f")  # never 1E-8: every digit and the scale


@dataclass(frozen=True)
class Column:
    name: str  # the Cassandra column
    postgres: str  # SQL over the source row giving the value Cassandra must hold
    cassandra: str  # the CQL selector reading it
    plain: Callable[[Any], Any] = _as_is  # the driver's value in the compared form


def same(name: str, source: str | None = None) -> Column:
    """Text, integers and booleans: stored as they are."""
    return Column(name, f'"{source or name}"', name)


def millis(name: str, source: str | None = None) -> Column:
    return Column(name, f'floor(extract(epoch FROM "{source or name}") * 1000)::bigint', f"toUnixTimestamp({name})")


def micros(name: str, source: str) -> Column:
    return Column(name, f'(extract(epoch FROM "{source}") * 1000000)::bigint', name)


def utc_day(name: str, source: str) -> Column:
    return Column(name, f"""("{source}" AT TIME ZONE 'UTC')::date::text""", name, _date_text)


def double(name: str, source: str | None = None) -> Column:
    return Column(name, f'"{source or name}"::float8', name)


def exact(name: str, source: str) -> Column:
    return Column(name, f'"{source}"::text', name, _decimal_text)


def priced(source: str, name: str | None = None) -> tuple[Column, Column]:
    """A numeric source column feeds a chart double and its exact decimal."""
    return double(name or source, source), exact(f"{name or source}_exact", source)


KLINE_BUCKET = Column("bucket", f"""(CASE
    WHEN "interval" IN ({SUB_HOUR_INTERVALS}) THEN (open_time AT TIME ZONE 'UTC')::date
    WHEN "interval" IN ({HOUR_OR_LONGER_INTERVALS}) THEN date_trunc('month', open_time AT TIME ZONE 'UTC')::date
    END)::text""", "bucket", _date_text)

TICKER_PRICES = ("price_change", "price_change_percent", "weighted_avg_price", "prev_close_price", "last_price",
                 "last_qty", "bid_price", "bid_qty", "ask_price", "ask_qty", "open_price", "high_price",
                 "low_price", "volume", "quote_volume")
TICKER_COLUMNS = (same("symbol"), millis("event_time"), micros("event_time_us", "event_time"),
                  *(c for source in TICKER_PRICES for c in priced(source)),
                  millis("open_time"), millis("close_time"), same("first_id"), same("last_id"), same("trade_count"))
KLINE_PRICES = ("open", "high", "low", "close", "volume", "quote_volume", "taker_buy_base_volume",
                "taker_buy_quote_volume")


@dataclass(frozen=True)
class Target:
    table: str
    source: str  # FROM clause of the source rows
    key: tuple[str, ...]
    columns: tuple[Column, ...]


TARGETS = (
    Target("ticker_by_day", "ticker_24h", ("symbol", "day", "event_time", "event_time_us"),
           (utc_day("day", "event_time"), *TICKER_COLUMNS)),
    Target("latest_prices",
           "(SELECT DISTINCT ON (symbol) * FROM ticker_24h ORDER BY symbol, event_time DESC) AS newest",
           ("symbol",), TICKER_COLUMNS),
    Target("klines_by_bucket", "klines", ("symbol", "interval", "bucket", "open_time", "open_time_us"),
           (same("symbol"), same("interval"), KLINE_BUCKET, millis("open_time"),
            micros("open_time_us", "open_time"), millis("close_time"), same("number_of_trades"),
            *(c for source in KLINE_PRICES for c in priced(source)))),
    Target("order_book", "order_book", ("symbol", "side", "level"),
           (same("symbol"), same("side"), same("level"), *priced("price"), *priced("quantity"),
            same("last_update_id"), millis("snapshot_time"))),
    Target("trades_by_day", "trades", ("symbol", "day", "trade_time", "trade_id"),
           (same("symbol"), utc_day("day", "trade_time"), millis("trade_time"), same("trade_id"),
            *priced("price"), *priced("qty"), *priced("quote_qty"), same("is_buyer_maker"),
            same("is_best_match"))),
)

Rows = dict[tuple, dict[str, Any]]


def _keyed(target: Target, rows) -> Rows:
    names = [c.name for c in target.columns]
    keyed = {}
    for values in rows:
        row = dict(zip(names, values))
        keyed[tuple(row[k] for k in target.key)] = row
    return keyed


def expected_rows(dsn: str, target: Target) -> Rows:
    """What Cassandra must hold for `target`, derived from the PostgreSQL source rows."""
    selectors = ", ".join(f'{c.postgres} AS "{c.name}"' for c in target.columns)
    with psycopg.connect(dsn) as conn:
        return _keyed(target, conn.execute(f"SELECT {selectors} FROM {target.source}").fetchall())


def actual_rows(session, keyspace: str, target: Target) -> Rows:
    """What Cassandra holds for `target`, read with CQL."""
    from cassandra.query import SimpleStatement

    statement = SimpleStatement(f"SELECT {', '.join(c.cassandra for c in target.columns)} "
                                f"FROM {keyspace}.{target.table}", fetch_size=PAGE_SIZE)
    plain = [c.plain for c in target.columns]
    return _keyed(target, ([f(v) for f, v in zip(plain, row)] for row in session.execute(statement, timeout=60)))


def differences(expected: Rows, actual: Rows, table: str, limit: int = 5) -> list[str]:
    """Rows missing from Cassandra, extra in it, and columns that differ (with both values)."""
    found = []
    for key in sorted(expected.keys() - actual.keys(), key=repr)[:limit]:
        found.append(f"{table}: missing {key}")
    for key in sorted(actual.keys() - expected.keys(), key=repr)[:limit]:
        found.append(f"{table}: extra {key}")
    differing = 0
    for key in sorted(expected.keys() & actual.keys(), key=repr):
        columns = {name: (value, actual[key][name]) for name, value in expected[key].items()
                   if value != actual[key][name]}
        if columns:
            differing += 1
            if differing <= limit:
                found.append(f"{table}: {key} differs (postgres, cassandra): {columns}")
    counts = (len(expected.keys() - actual.keys()), len(actual.keys() - expected.keys()), differing)
    if any(counts):
        found.insert(0, f"{table}: {len(expected)} expected rows, {len(actual)} stored; "
                        f"missing {counts[0]}, extra {counts[1]}, differing {counts[2]}")
    return found


def compare(dsn: str, session, keyspace: str, tables: tuple[str, ...] = ()) -> tuple[list[str], dict[str, int]]:
    """Every difference between each target's expected rows (or those of `tables`) and Cassandra, and how many
    rows each target was expected to hold."""
    found, counts = [], {}
    for target in TARGETS:
        if not tables or target.table in tables:
            expected = expected_rows(dsn, target)
            counts[target.table] = len(expected)
            found += differences(expected, actual_rows(session, keyspace, target), target.table)
    return found, counts


def assert_replicated(dsn: str, session, keyspace: str, tables: tuple[str, ...] = (),
                      minimum_rows: int = 1) -> dict[str, int]:
    """Cassandra holds exactly the expected rows; returns the row count of each target compared."""
    found, counts = compare(dsn, session, keyspace, tables)
    assert not found, "Cassandra differs from PostgreSQL (independent oracle):\n" + "\n".join(found)
    assert sum(counts.values()) >= minimum_rows, f"the oracle compared too few rows: {counts}"
    return counts
