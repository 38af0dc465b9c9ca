"""`version_from`: a target whose newest row is decided by a source timestamp, not by commit order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from cdc_consumer.events import Op
from cdc_consumer.mapping import MappingError, UnmappableRecord, compile_mapping, load_mapping, parse_mapping
from tests.unit.cql_tables import cql_table_schemas
from tests.unit.test_mapping import TICKER, by_table, event

SNAPSHOT_TS_US = 1_800_000_000_000_000  # one snapshot time shared by every row of a re-snapshot


@pytest.fixture(scope="module")
def mapping():
    return compile_mapping(load_mapping(), cql_table_schemas())


def ticker_at(seconds: int) -> dict:
    return {**TICKER, "event_time": datetime(2026, 11, 21, tzinfo=UTC) + timedelta(seconds=seconds),
            "last_price": Decimal(seconds)}


def epoch_us(when: datetime) -> int:
    return (when - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def test_latest_prices_is_versioned_by_event_time_not_by_commit_time(mapping):
    row = ticker_at(30)
    writes = by_table(mapping.writes(event("public.ticker_24h", Op.READ, after=row, ts_us=SNAPSHOT_TS_US)))
    assert writes["latest_prices"].timestamp == epoch_us(row["event_time"])
    assert writes["ticker_by_day"].timestamp == SNAPSHOT_TS_US  # history rows keep commit-time versions


def test_snapshot_rows_sharing_one_commit_time_still_order_by_event_time(mapping):
    older, newer = (by_table(mapping.writes(event("public.ticker_24h", Op.READ, after=ticker_at(s),
                                                    ts_us=SNAPSHOT_TS_US)))["latest_prices"] for s in (10, 20))
    assert newer.timestamp > older.timestamp and newer.order > older.order


def test_a_row_without_the_version_column_is_unmappable():
    document = {"version": 1, "tables": {"public.ticker_24h": {"targets": [
        {"table": "latest_prices", "on_delete": "ignore", "version_from": "event_time",
         "columns": {"symbol": "symbol", "last_price": {"from": "last_price", "convert": "double"}}}]}}}
    only_latest = compile_mapping(parse_mapping(document), cql_table_schemas())
    with pytest.raises(UnmappableRecord, match="version_from column event_time"):
        only_latest.writes(event("public.ticker_24h", Op.CREATE, after={**ticker_at(1), "event_time": None}))


def test_version_from_requires_deletes_to_be_ignored():
    document = {"version": 1, "tables": {"public.t": {"targets": [
        {"table": "latest_prices", "version_from": "event_time", "columns": {"symbol": "symbol"}}]}}}
    with pytest.raises(MappingError, match="version_from.*on_delete: ignore"):
        parse_mapping(document)
