"""What the sink sends for a buffer of writes: newest write per row, rows grouped by partition."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from cassandra.query import UNSET_VALUE

from cdc_consumer.events import UNAVAILABLE, ChangeEvent, Op, Source
from cdc_consumer.mapping import (
    TableSchema,
    compile_mapping,
    load_mapping,
    parse_mapping,
)
from cdc_consumer.sink import collapse, partition_slices
from tests.unit.cql_tables import cql_table_schemas


@pytest.fixture(scope="module")
def mapping():
    return compile_mapping(load_mapping(), cql_table_schemas())


def change(table, op, *, after=None, before=None, ts_us=1_000, lsn=1):
    schema, name = table.split(".")
    return ChangeEvent(topic=f"cdc.{table}", partition=0, offset=0, op=op, key=None, before=before, after=after,
                       source=Source(ts_us, lsn, 1, None, "cdc", schema, name))


def level(symbol="BTCUSDT", side="bid", n=0, price="1.00000000"):
    return {"symbol": symbol, "side": side, "level": n, "price": Decimal(price), "quantity": Decimal("2.00000000")}


def price_of(write):
    return write.values[[c.column for c in write.target.columns].index("price_exact")]


def test_the_newest_change_of_a_row_wins_by_commit_time_then_lsn_not_arrival(mapping):
    writes = [
        *mapping.writes(change("public.order_book", Op.UPDATE, after=level(price="3"), ts_us=2_000, lsn=1)),
        *mapping.writes(change("public.order_book", Op.UPDATE, after=level(price="4"), ts_us=2_000, lsn=9)),
        *mapping.writes(change("public.order_book", Op.UPDATE, after=level(price="1"), ts_us=1_000, lsn=50)),
    ]
    (newest,) = collapse(writes)
    assert price_of(newest) == Decimal(4) and newest.timestamp == 2_000


def test_distinct_rows_are_all_kept(mapping):
    writes = [w for n in range(5) for w in mapping.writes(change("public.order_book", Op.CREATE, after=level(n=n)))]
    assert collapse(writes) == writes


def test_equal_order_keeps_the_later_arrival(mapping):
    first = mapping.writes(change("public.order_book", Op.READ, after=level(price="1")))
    second = mapping.writes(change("public.order_book", Op.READ, after=level(price="2")))
    (kept,) = collapse(first + second)
    assert price_of(kept) == Decimal(2)


def test_unset_toast_columns_keep_the_value_of_the_older_write():
    schema = {"toast": TableSchema("toast", {"id": "int", "payload": "text", "note": "text"}, ("id",))}
    doc = {"tables": {"public.toast_demo": {"targets": [
        {"table": "toast", "columns": {"id": "id", "payload": "payload", "note": "note"}}]}}}
    toast = compile_mapping(parse_mapping(doc), schema)
    created = toast.writes(change("public.toast_demo", Op.CREATE, after={"id": 1, "payload": "x" * 2560,
                                                                          "note": "first"}, lsn=1))
    updated = toast.writes(change("public.toast_demo", Op.UPDATE, after={"id": 1, "payload": UNAVAILABLE,
                                                                          "note": "second"}, lsn=2))
    assert updated[0].values[1] is UNSET_VALUE
    (merged,) = collapse(created + updated)
    assert merged.values == [1, "x" * 2560, "second"] and merged.order == (1_000, 2)


def test_a_delete_after_an_upsert_leaves_only_the_delete(mapping):
    writes = [*mapping.writes(change("public.order_book", Op.CREATE, after=level(), lsn=1)),
              *mapping.writes(change("public.order_book", Op.DELETE, before=level(), lsn=2))]
    (kept,) = collapse(writes)
    assert kept.is_delete


def test_a_reinsert_after_a_delete_in_one_transaction_survives_the_timestamp_tie(mapping):
    writes = [*mapping.writes(change("public.order_book", Op.DELETE, before=level(), ts_us=5_000, lsn=1)),
              *mapping.writes(change("public.order_book", Op.CREATE, after=level(price="7"), ts_us=5_000, lsn=2))]
    delete, upsert = collapse(writes)
    # Cassandra lets a tombstone win a timestamp tie, so the delete moves 1 µs earlier.
    assert delete.is_delete and delete.timestamp == 4_999
    assert price_of(upsert) == Decimal(7) and upsert.timestamp == 5_000


def test_rows_of_one_partition_share_a_batch_of_bounded_size(mapping):
    writes = [w for side in ("bid", "ask") for n in range(5)
              for w in mapping.writes(change("public.order_book", Op.CREATE, after=level(side=side, n=n)))]
    writes += mapping.writes(change("public.order_book", Op.CREATE, after=level(symbol="ETHUSDT")))
    slices = partition_slices(writes, max_rows=4)
    assert sorted(len(s) for s in slices) == [1, 2, 4, 4]
    for part in slices:
        assert len({w.partition for w in part}) == 1


def test_partitions_of_different_tables_never_share_a_batch(mapping):
    ticker = {"symbol": "BTCUSDT", "event_time": datetime(2024, 1, 1, tzinfo=UTC), "last_price": Decimal(1)}
    writes = mapping.writes(change("public.ticker_24h", Op.CREATE, after=ticker))
    slices = partition_slices(writes, max_rows=25)
    assert sorted((s[0].target.table, s[0].partition) for s in slices) == [
        ("latest_prices", ("BTCUSDT",)), ("ticker_by_day", ("BTCUSDT", date(2024, 1, 1)))]
