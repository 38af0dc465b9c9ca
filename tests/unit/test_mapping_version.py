"""`snapshot_version_from`: snapshot rows of a many-to-one target are ordered by their own time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from cdc_consumer.errors import UnmappableRecord
from cdc_consumer.events import Op
from cdc_consumer.mapping import compile_mapping, load_mapping, parse_mapping
from tests.unit.cql_tables import cql_table_schemas
from tests.unit.test_mapping import TICKER, by_table, event

SNAPSHOT_TS_US = 1_800_000_000_000_000  # one snapshot time shared by every row of a (re-)snapshot


@pytest.fixture(scope="module")
def mapping():
    return compile_mapping(load_mapping(), cql_table_schemas())


def ticker_at(seconds: int) -> dict:
    return {**TICKER, "event_time": datetime(2026, 11, 21, tzinfo=UTC) + timedelta(seconds=seconds),
            "last_price": Decimal(seconds)}


def epoch_us(when: datetime) -> int:
    return (when - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def latest(mapping, op: Op, row: dict, ts_us: int):
    return by_table(mapping.writes(event("public.ticker_24h", op, after=row, ts_us=ts_us)))


def test_snapshot_rows_of_latest_prices_are_versioned_by_event_time(mapping):
    row = ticker_at(30)
    writes = latest(mapping, Op.READ, row, SNAPSHOT_TS_US)
    assert writes["latest_prices"].timestamp == epoch_us(row["event_time"])
    assert writes["ticker_by_day"].timestamp == SNAPSHOT_TS_US  # one row per source row: snapshot time is fine


def test_among_snapshot_rows_sharing_one_snapshot_time_the_newest_event_wins(mapping):
    older, newer = (latest(mapping, Op.READ, ticker_at(s), SNAPSHOT_TS_US)["latest_prices"] for s in (10, 20))
    assert newer.timestamp > older.timestamp and newer.order > older.order


def test_a_snapshot_row_never_beats_a_change_streamed_after_the_snapshot_started(mapping):
    future_row = ticker_at(10**9)  # event time later than the snapshot time (clock skew)
    snapshot = latest(mapping, Op.READ, future_row, SNAPSHOT_TS_US)["latest_prices"]
    streamed = latest(mapping, Op.UPDATE, ticker_at(1), SNAPSHOT_TS_US + 1)["latest_prices"]
    assert snapshot.timestamp == SNAPSHOT_TS_US - 1 < streamed.timestamp


def test_streamed_changes_keep_commit_time_so_an_in_place_update_wins(mapping):
    row = ticker_at(5)
    insert = latest(mapping, Op.CREATE, row, SNAPSHOT_TS_US)["latest_prices"]
    update = latest(mapping, Op.UPDATE, {**row, "last_price": Decimal(6)}, SNAPSHOT_TS_US + 7)["latest_prices"]
    assert (insert.timestamp, update.timestamp) == (SNAPSHOT_TS_US, SNAPSHOT_TS_US + 7)


def test_a_snapshot_row_without_the_version_column_is_unmappable():
    document = {"version": 1, "tables": {"public.ticker_24h": {"targets": [
        {"table": "latest_prices", "on_delete": "ignore", "snapshot_version_from": "event_time",
         "columns": {"symbol": "symbol", "last_price": {"from": "last_price", "convert": "double"}}}]}}}
    only_latest = compile_mapping(parse_mapping(document), cql_table_schemas())
    with pytest.raises(UnmappableRecord, match="snapshot_version_from column event_time"):
        only_latest.writes(event("public.ticker_24h", Op.READ, after={**ticker_at(1), "event_time": None}))
