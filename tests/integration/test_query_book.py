"""Every statement of cql/queries.cql runs through cqlsh (the PyPI package) against the real Cassandra node,
on a keyspace holding pipeline-written data: exit 0, nothing on stderr, and rows that answer its question.

The answers are derived from the source rows the keyspace was loaded with (tests/integration/market_data.py:
the live rows timed around its `now`, and the Debezium fixture for the fixed 2024 range), filtered by each
question written out here, and compared with cqlsh's printed values: decimals digit for digit, times to the
microsecond, order where the question asks for one. A question relative to "now" is judged against the
moment before and after cqlsh ran: rows inside the window at both moments must come back, rows outside it at
both must not."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from bench.envelopes import fixture_records
from tests.integration.consume_support import source_state
from tests.integration.market_data import (  # noqa: F401 (fixture)
    LIVE_SYMBOLS,
    live_events,
    market_keyspace,
    old_ticks,
)
from tests.unit.cql_queries import QUERY_BOOK, query_book

pytestmark = pytest.mark.integration

ENTRIES = query_book(QUERY_BOOK.read_text(encoding="utf-8"))
ROW_COUNT = re.compile(r"^\((\d+) rows\)$", re.MULTILINE)


def cqlsh(settings, keyspace: str, *arguments: str) -> subprocess.CompletedProcess:
    executable = Path(sys.executable).with_name("cqlsh")
    assert executable.exists(), f"cqlsh is not installed beside {sys.executable} (pip install cqlsh)"
    cassandra = settings.cassandra
    return subprocess.run([str(executable), cassandra.hosts[0], str(cassandra.port), "-k", keyspace,
                           "--request-timeout", "30", *arguments],
                          capture_output=True, text=True, timeout=120, check=False)


def printed_rows(stdout: str) -> list[dict[str, str]]:
    """The result table cqlsh prints, as {column: printed value} per row."""
    lines = stdout.splitlines()
    rule = next(i for i, line in enumerate(lines) if line.strip() and set(line.strip()) <= set("-+"))
    names = [name.strip() for name in lines[rule - 1].split("|")]
    rows = []
    for line in lines[rule + 1:]:
        if not line.strip():
            break
        rows.append(dict(zip(names, (cell.strip() for cell in line.split("|")))))
    return rows


def source_of(column: str) -> str:
    """The source column a Cassandra column holds (`*_exact` keeps the exact numeric of its source)."""
    return column.removesuffix("_exact")


def printed(value) -> str:
    """A source value as cqlsh prints it."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f+0000")
    return str(value)


@dataclass
class Asked:
    """One run of a statement: the source rows of the keyspace and the moments around the cqlsh call."""

    rows: list[dict[str, str]]
    live: dict[str, list[dict]]  # source table -> live source rows (creates only)
    before: datetime
    after: datetime

    @property
    def today(self) -> date:
        return self.before.date()

    def source(self, table: str, symbol: str = "BTCUSDT", **equal) -> list[dict]:
        return [r for r in self.live[table] if r["symbol"] == symbol and all(r[k] == v for k, v in equal.items())]

    def within(self, rows: list[dict], column: str, span: timedelta) -> tuple[list[dict], list[dict]]:
        """(rows that must answer, rows that may answer) a "the last `span`, today" question."""
        today = [r for r in rows if r[column].astimezone(UTC).date() == self.today]
        return ([r for r in today if r[column] >= self.after - span],
                [r for r in today if r[column] >= self.before - span - timedelta(seconds=1)])


def same_values(asked: Asked, expected: list[dict], key: str, columns: tuple[str, ...], *,
                may: list[dict] | None = None, ordered: str | None = None) -> None:
    """The printed rows are exactly `expected` (plus any of `may`), keyed by `key`, with equal `columns`."""
    by_key = {printed(r[key]): r for r in (may or expected)} | {printed(r[key]): r for r in expected}
    got = [row[key] for row in asked.rows]
    assert {printed(r[key]) for r in expected} <= set(got) <= set(by_key), (got, sorted(by_key))
    assert len(got) == len(set(got)), f"a row came back twice: {got}"
    for row in asked.rows:
        want = {c: printed(by_key[row[key]][source_of(c)]) for c in columns}
        assert {c: row[c] for c in columns} == want, row
    if ordered:
        assert got == sorted(got, reverse=ordered == "desc"), f"not in {ordered} order: {got}"


def close(text: str, value) -> bool:
    """A double as cqlsh prints it (5 significant digits) against the exact source value."""
    return abs(float(text) - float(value)) <= abs(float(value)) * 1e-4


def latest_prices(asked: Asked, columns: tuple[str, ...], doubles: tuple[str, ...] = ()) -> None:
    listed = {"BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT", "XRPUSDT"}
    by_symbol = {row["symbol"]: row for row in asked.rows}
    assert set(by_symbol) <= listed and set(LIVE_SYMBOLS) <= set(by_symbol), sorted(by_symbol)
    for symbol in LIVE_SYMBOLS:
        newest = max(asked.source("ticker_24h", symbol), key=lambda r: r["event_time"])
        assert {c: by_symbol[symbol][c] for c in columns} == {c: printed(newest[source_of(c)]) for c in columns}
        for column in doubles:
            assert close(by_symbol[symbol][column], newest[column]), (symbol, column)


def ticks_today(asked: Asked) -> None:
    ticks = sorted((r for r in asked.source("ticker_24h") if r["event_time"].astimezone(UTC).date() == asked.today),
                   key=lambda r: r["event_time"], reverse=True)[:100]
    assert [row["event_time"] for row in asked.rows] == [printed(r["event_time"]) for r in ticks]
    same_values(asked, ticks, "event_time", ("last_price_exact", "bid_price_exact", "ask_price_exact",
                                             "volume_exact", "trade_count"))


def ticks_last_15_minutes(asked: Asked) -> None:
    must, may = asked.within(asked.source("ticker_24h"), "event_time", timedelta(minutes=15))
    same_values(asked, must, "event_time", ("last_price_exact", "price_change_percent_exact"), may=may)


def candles_last_hour(asked: Asked) -> None:
    must, may = asked.within(asked.source("klines", interval="1m"), "open_time", timedelta(hours=1))
    same_values(asked, must, "open_time", ("open_exact", "high_exact", "low_exact", "close_exact", "volume_exact",
                                           "number_of_trades"), may=may, ordered="asc")


def candles_of_2024_01_01_morning(asked: Asked) -> None:
    # the fixture's klines after its changes, read from the Debezium JSON without the product's decoder
    klines = source_state((r.source_topic, r.key, r.value) for r in fixture_records())["public.klines"]
    start = datetime(2024, 1, 1, tzinfo=UTC)
    expected = [r for (symbol, interval, open_time), r in klines.items()
                if (symbol, interval) == ("BTCUSDT", "1m") and start <= open_time < start + timedelta(hours=6)]
    same_values(asked, expected, "open_time", ("close_time", "open_exact", "high_exact", "low_exact", "close_exact",
                                               "volume_exact"))


def hourly_candles_this_month(asked: Asked) -> None:
    expected = [r for r in asked.source("klines", interval="1h")
                if (r["open_time"].year, r["open_time"].month) == (asked.today.year, asked.today.month)]
    same_values(asked, expected, "open_time", ("open_exact", "high_exact", "low_exact", "close_exact",
                                               "quote_volume_exact"))


def trades_last_5_minutes(asked: Asked) -> None:
    must, may = asked.within(asked.source("trades"), "trade_time", timedelta(minutes=5))
    same_values(asked, must, "trade_id", ("trade_time", "price_exact", "qty_exact", "quote_qty_exact",
                                          "is_buyer_maker"), may=may)


def trades_per_minute(asked: Asked) -> None:
    must, may = asked.within(asked.source("trades"), "trade_time", timedelta(hours=1))
    assert len(must) == len(may), "a trade near the hour's edge: the counts would be ambiguous"
    minutes: dict[str, list[Decimal]] = {}
    for trade in must:
        minute = trade["trade_time"].replace(second=0, microsecond=0)
        minutes.setdefault(printed(minute), []).append(trade["quote_qty"])
    assert {row["minute"]: int(row["trades"]) for row in asked.rows} == {m: len(q) for m, q in minutes.items()}
    for row in asked.rows:
        assert close(row["quote_volume"], sum(minutes[row["minute"]])), row


def order_book(asked: Asked) -> None:
    levels = asked.source("order_book")
    for level in levels:
        level["side_level"] = f"{level['side']} {level['level']}"
    for row in asked.rows:
        row["side_level"] = f"{row['side']} {row['level']}"
    same_values(asked, levels, "side_level", ("price_exact", "quantity_exact", "last_update_id", "snapshot_time"))


def counted(table: str, column: str, days: tuple[int, ...], **equal) -> Callable[[Asked], None]:
    """A rows-per-bucket question: the count of source rows in each of today's (and earlier) day buckets."""
    def check(asked: Asked) -> None:
        wanted = {asked.today - timedelta(days=d) for d in days}
        counts: dict[str, int] = {}
        for r in asked.source(table, **equal):
            day = r[column].astimezone(UTC).date()
            if day in wanted:
                counts[str(day)] = counts.get(str(day), 0) + 1
        day_column = "bucket" if "bucket" in asked.rows[0] else "day"
        assert {row[day_column]: int(row["rows"]) for row in asked.rows} == counts
    return check


ANSWERS: dict[str, Callable[[Asked], None]] = {  # by the start of the question's comment
    "Latest price of each symbol": lambda asked: latest_prices(
        asked, ("last_price_exact", "price_change_percent_exact", "bid_price_exact", "ask_price_exact", "event_time")),
    "The last 100 ticks of a symbol today": ticks_today,
    "Ticks of a symbol in the last 15 minutes": ticks_last_15_minutes,
    "1-minute candles of the last hour": candles_last_hour,
    "1-minute candles in a fixed time range": candles_of_2024_01_01_morning,
    "Hourly candles of this month": hourly_candles_this_month,
    "Top movers": lambda asked: latest_prices(
        asked, ("price_change_percent_exact", "last_price_exact", "quote_volume_exact"),
        doubles=("price_change_percent",)),
    "Trades of a symbol in the last 5 minutes": trades_last_5_minutes,
    "Trades per minute of a symbol over the last hour": trades_per_minute,
    "Current order book of a symbol": order_book,
    "Rows per bucket: ticker rows": counted("ticker_24h", "event_time", (0, 1)),
    "Rows per bucket: 1-minute candles": counted("klines", "open_time", (0,), interval="1m"),
    "Rows per bucket: trades": counted("trades", "trade_time", (0,)),
}


def answer_of(entry) -> Callable[[Asked], None]:
    matches = [check for question, check in ANSWERS.items() if entry.comment.startswith(question)]
    assert len(matches) == 1, f"line {entry.line}: no answer check for the question {entry.comment!r}"
    return matches[0]


@pytest.mark.parametrize("entry", ENTRIES, ids=[f"line{e.line}" for e in ENTRIES])
def test_statement_answers_its_question_through_cqlsh(market_keyspace, settings, entry):  # noqa: F811
    check = answer_of(entry)
    live: dict[str, list[dict]] = {}
    for event in live_events(market_keyspace.now, old_ticks(market_keyspace.now)):
        live.setdefault(event.table.removeprefix("public."), []).append(dict(event.after))
    before = datetime.now(UTC)
    result = cqlsh(settings, market_keyspace.keyspace, "-e", entry.statement)
    after = datetime.now(UTC)
    assert (result.returncode, result.stderr) == (0, ""), entry.comment
    rows = printed_rows(result.stdout)
    assert rows, f"no row for: {entry.comment}\n{result.stdout}"
    check(Asked(rows, live, before, after))


def test_the_whole_book_runs_as_one_cqlsh_script(market_keyspace, settings):  # noqa: F811
    result = cqlsh(settings, market_keyspace.keyspace, "-f", str(QUERY_BOOK))
    assert (result.returncode, result.stderr) == (0, "")
    assert len(ROW_COUNT.findall(result.stdout)) == len(ENTRIES)


def test_a_failing_statement_is_reported_by_cqlsh(market_keyspace, settings):  # noqa: F811
    """The checks above can fail: cqlsh exits non-zero and writes to stderr for a rejected query."""
    result = cqlsh(settings, market_keyspace.keyspace, "-e",
                   "SELECT symbol FROM ticker_by_day WHERE last_price > 1")
    assert result.returncode != 0
    assert "ALLOW FILTERING" in result.stderr
