"""A fresh Cassandra keyspace holding market data written the way `cdc consume` writes it.

The rows come from two sources, both as `ChangeEvent`s sent through the project's default mapping
(cdc_consumer/mapping.yaml) and `CassandraSink`:
- the real Debezium records of /work/shared/fixtures/debezium/pg_precise_default.ndjson, decoded by
  `cdc_consumer.decoder.Decoder` (ticker_24h and klines of 2024, with their updates and deletes);
- change events timed around "now" for every source table (ticker_24h, klines of every dashboard interval,
  trades, order_book), so panels over the last hours and the query book's now-relative queries have rows.

`market_keyspace` is a module-scoped fixture: import it into a test module to use it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from cdc_consumer.decoder import Decoder
from cdc_consumer.events import ChangeEvent, Op, Source
from cdc_consumer.mapping import compile_mapping, describe_tables, load_mapping
from cdc_consumer.schema import apply_cql
from cdc_consumer.sink import CassandraSink
from tests.support import fixtures_dir, unique_name

LIVE_SYMBOLS = ("BTCUSDT", "ETHUSDT")
KLINE_INTERVALS = {"1m": timedelta(minutes=1), "5m": timedelta(minutes=5), "15m": timedelta(minutes=15),
                   "1h": timedelta(hours=1), "4h": timedelta(hours=4), "1d": timedelta(days=1)}
TICKS = 30  # per symbol, 10 s apart, the newest at `now`
TRADES = 50  # per symbol, 5 s apart
BOOK_LEVELS = 5  # per side
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class MarketKeyspace:
    session: object
    keyspace: str
    now: datetime  # the newest live row's time (UTC, whole milliseconds)
    written: int  # change events applied


def floor_time(moment: datetime, step: timedelta) -> datetime:
    return EPOCH + (moment - EPOCH) // step * step


def fixture_events() -> list[ChangeEvent]:
    """Decoded data changes (r/c/u/d) of the mapped source tables in the Debezium golden fixture."""
    mapped = set(load_mapping().tables)
    decoder = Decoder()
    events = []
    path = fixtures_dir() / "debezium" / "pg_precise_default.ndjson"
    for offset, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        record = json.loads(line)
        event = decoder.decode(record["topic"], record["key"], record["value"], partition=0, offset=offset)
        if event.table in mapped and event.op in (Op.READ, Op.CREATE, Op.UPDATE, Op.DELETE):
            events.append(event)
    return events


def _event(table: str, row: dict, moment: datetime, sequence: int) -> ChangeEvent:
    ts_us = (moment - EPOCH) // timedelta(microseconds=1)
    source = Source(ts_us=ts_us, lsn=sequence, tx_id=None, snapshot=None, db="cdc", schema="public", table=table)
    return ChangeEvent(topic=f"cdc.public.{table}", partition=0, offset=sequence, op=Op.CREATE, key=None,
                       before=None, after=row, source=source)


def _price(base: int, step: int) -> Decimal:
    return Decimal(f"{base + step}.12345678")  # built from text: exact


def old_ticks(now: datetime) -> tuple[datetime, datetime]:
    """Two older ticks: 1 h into the 6th UTC day before `now`'s day, and 1 h before that day starts."""
    sixth_day = floor_time(now, timedelta(days=1)) - timedelta(days=6)
    return sixth_day + timedelta(hours=1), sixth_day - timedelta(hours=1)


def live_events(now: datetime, extra_ticks: tuple[datetime, ...] = ()) -> Iterator[ChangeEvent]:
    """Rows of every source table timed at and shortly before `now` (plus ticks at `extra_ticks`)."""
    sequence = 0
    for number, symbol in enumerate(LIVE_SYMBOLS):
        base = 90_000 if number == 0 else 3_000
        tick_times = [now - timedelta(seconds=10 * i) for i in range(TICKS)] + list(extra_ticks)
        for i, moment in enumerate(tick_times):
            sequence += 1
            yield _event("ticker_24h", {
                "symbol": symbol, "event_time": moment, "price_change": Decimal(f"-{i}.5"),
                "price_change_percent": Decimal(f"{number + 1}.{i:02d}"), "weighted_avg_price": _price(base, 0),
                "prev_close_price": _price(base, -1), "last_price": _price(base, i), "last_qty": Decimal("0.5"),
                "bid_price": _price(base, i - 1), "bid_qty": Decimal("1.25"), "ask_price": _price(base, i + 1),
                "ask_qty": Decimal("2.5"), "open_price": _price(base, -2), "high_price": _price(base, 50),
                "low_price": _price(base, -50), "volume": Decimal(f"{1000 + i}.00000001"),
                "quote_volume": Decimal(f"{base * 1000 + i}.5"), "open_time": moment - timedelta(days=1),
                "close_time": moment, "first_id": 1, "last_id": 1000 + i, "trade_count": 1000 + i,
            }, moment, sequence)
        for interval, step in KLINE_INTERVALS.items():
            for k in range(3):
                open_time = floor_time(now, step) - k * step
                sequence += 1
                yield _event("klines", {
                    "symbol": symbol, "interval": interval, "open_time": open_time,
                    "close_time": open_time + step - timedelta(milliseconds=1), "open": _price(base, k),
                    "high": _price(base, k + 10), "low": _price(base, k - 10), "close": _price(base, k + 1),
                    "volume": Decimal(f"{10 + k}.5"), "quote_volume": Decimal(f"{base * 10 + k}.25"),
                    "number_of_trades": 100 + k, "taker_buy_base_volume": Decimal("5.5"),
                    "taker_buy_quote_volume": Decimal(f"{base * 5}.75"),
                }, now, sequence)
        for i in range(TRADES):
            moment = now - timedelta(seconds=5 * i)
            sequence += 1
            qty = Decimal(f"0.{i + 1:03d}")
            yield _event("trades", {
                "symbol": symbol, "trade_id": 10_000 + i, "price": _price(base, i), "qty": qty,
                "quote_qty": Decimal(f"{base + i}.5"), "trade_time": moment, "is_buyer_maker": i % 2 == 0,
                "is_best_match": True,
            }, moment, sequence)
        for side, sign in (("bid", -1), ("ask", 1)):
            for level in range(1, BOOK_LEVELS + 1):
                sequence += 1
                yield _event("order_book", {
                    "symbol": symbol, "side": side, "level": level, "price": _price(base, sign * level),
                    "quantity": Decimal(f"{level}.25"), "last_update_id": 777, "snapshot_time": now,
                }, now, sequence)


def write_events(session, keyspace: str, events: list[ChangeEvent]) -> int:
    """Apply events through the default mapping and the sink, as the consumer does; returns how many."""
    mapping = compile_mapping(load_mapping(), describe_tables(session, keyspace), session.prepare, keyspace)
    sink = CassandraSink(session)
    for token, event in enumerate(events):
        sink.add(token, mapping.writes(event))
    assert sink.drain(timeout=60), "Cassandra did not acknowledge the test rows within 60 s"
    return len(events)


def load_market(session, keyspace: str, now: datetime) -> MarketKeyspace:
    apply_cql(session, keyspace)
    written = write_events(session, keyspace, fixture_events() + list(live_events(now, old_ticks(now))))
    return MarketKeyspace(session, keyspace, now, written)


def utc_now_ms() -> datetime:
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


@pytest.fixture(scope="module")
def market_keyspace(cassandra_cluster) -> Iterator[MarketKeyspace]:
    """A keyspace with the schema, the Debezium fixture rows and live rows; dropped afterwards."""
    keyspace = unique_name("grafana")
    session = cassandra_cluster.connect()
    try:
        yield load_market(session, keyspace, utc_now_ms())
    finally:
        session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}", timeout=60)
        session.shutdown()
