"""The Cassandra sink against a real Cassandra: every record acknowledged exactly once, bounded in-flight."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bench.envelopes import kline_stream
from cdc_consumer import schema
from cdc_consumer.decoder import Decoder
from cdc_consumer.mapping import compile_mapping, describe_tables, load_mapping
from cdc_consumer.sink import CassandraSink
from tests.integration.consume_support import assert_row_matches

pytestmark = pytest.mark.integration


@pytest.fixture()
def mapping(cassandra_session):
    keyspace = cassandra_session.keyspace
    schema.apply_cql(cassandra_session, keyspace)
    return compile_mapping(load_mapping(), describe_tables(cassandra_session, keyspace), cassandra_session.prepare,
                           keyspace)


def test_every_token_comes_back_once_after_its_writes_are_acknowledged(cassandra_session, mapping):
    stream = kline_stream(700, symbols=7, start=datetime(2035, 1, 1, tzinfo=UTC))
    decoder = Decoder()
    sink = CassandraSink(cassandra_session, max_batch_rows=10, max_in_flight=3)
    peak_in_flight, released = 0, []
    for index, (key, value) in enumerate(stream.records):
        sink.add(index, mapping.writes(decoder.decode("t", key, value)))
        if index % 37 == 36:
            sink.flush()
            peak_in_flight = max(peak_in_flight, sink.in_flight)
            released += sink.poll()
    assert sink.drain(60)
    released += sink.poll()
    assert sorted(released) == list(range(700))
    assert peak_in_flight <= 3
    # 700 rows in 7 partitions x 37-record flushes: grouped into batches, far fewer requests than rows
    assert sink.stats.rows == 700 and sink.stats.requests < 700 / 4
    rows = {(r.symbol, r.open_time): r for r in cassandra_session.execute("SELECT * FROM klines_by_bucket")}
    assert len(rows) == 700
    for (symbol, _, open_time), source_row in stream.rows.items():
        assert_row_matches(rows[(symbol, open_time.replace(tzinfo=None))], source_row,
                           derived={"bucket": open_time.date()})


def test_an_older_write_never_overwrites_a_newer_one(cassandra_session, mapping):
    stream = kline_stream(1, symbols=1, start=datetime(2035, 2, 1, tzinfo=UTC), start_ts_us=2_000_000)
    older = kline_stream(1, symbols=1, start=datetime(2035, 2, 1, tzinfo=UTC), start_ts_us=1_000_000)
    decoder = Decoder()
    sink = CassandraSink(cassandra_session)
    for records in (stream.records, older.records):  # newest first, in two separate requests
        key, value = records[0]
        event = decoder.decode("t", key, value)
        if records is older.records:
            event.after = {**event.after, "close": event.after["close"] + 1}
        sink.add("token", mapping.writes(event))
        sink.flush()
        assert sink.drain(30)
    row = cassandra_session.execute("SELECT close_exact, WRITETIME(close_exact) AS wt FROM klines_by_bucket").one()
    assert row.close_exact == next(iter(stream.rows.values()))["close"] and row.wt == 2_000_000
