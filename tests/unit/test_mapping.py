"""The mapping: YAML -> checked specs -> compiled writers -> Cassandra row operations of change events."""

from __future__ import annotations

import types
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from cassandra.query import UNSET_VALUE

from cdc_consumer.errors import MappingError, UnmappableRecord
from cdc_consumer.events import UNAVAILABLE, ChangeEvent, Op, Source
from cdc_consumer.mapping import TableSchema, compile_mapping, load_mapping, parse_mapping, statements_for
from tests.unit.cql_tables import cql_table_schemas

TS_US = 1_790_000_000_123_456  # a source commit time


def event(table: str, op: Op, *, after=None, before=None, key=None, topic=None, ts_us=TS_US, lsn=100,
          typed=True) -> ChangeEvent:
    schema, name = table.split(".")
    return ChangeEvent(topic=topic or f"cdc.{table}", partition=0, offset=1, op=op, key=key, before=before,
                       after=after, source=Source(ts_us, lsn, 7, None, "cdc", schema, name), typed=typed)


@pytest.fixture(scope="module")
def mapping():
    return compile_mapping(load_mapping(), cql_table_schemas())


def by_table(writes):
    return {w.target.table: w for w in writes}


def values(write) -> dict:
    return {c.column: v for c, v in zip(write.target.columns, write.values)}


TICKER = {
    "symbol": "BTCUSDT", "event_time": datetime(2024, 1, 1, 0, 0, 0, 123456, tzinfo=UTC),
    "price_change": Decimal("1234.56000000"), "price_change_percent": Decimal("2.9400"),
    "last_price": Decimal("9999999999999999999999.99999999"), "high_price": Decimal("-0.00000001"),
    "low_price": None, "volume": Decimal("0E-8"), "quote_volume": Decimal("533452123.12345678"),
    "trade_count": 1234567,
}


class TestDefaultMapping:
    def test_the_packaged_mapping_fits_the_packaged_cql_schema(self, mapping):
        assert set(mapping.tables) == {"public.ticker_24h", "public.klines", "public.order_book", "public.trades"}
        assert {w.table for w in mapping.writers} == set(cql_table_schemas())

    def test_a_ticker_row_fans_out_to_history_and_latest_price(self, mapping):
        writes = by_table(mapping.writes(event("public.ticker_24h", Op.CREATE, after=TICKER)))
        assert set(writes) == {"ticker_by_day", "latest_prices"}
        history = values(writes["ticker_by_day"])
        assert history["day"] == date(2024, 1, 1)
        assert history["event_time"] == 1_704_067_200_123  # epoch ms, bound as an exact integer
        assert history["event_time_us"] == 1_704_067_200_123_456
        assert history["last_price_exact"] == Decimal("9999999999999999999999.99999999")
        assert str(history["last_price_exact"]) == "9999999999999999999999.99999999"
        assert history["last_price"] == 1e22
        assert history["high_price_exact"] == Decimal("-0.00000001") and history["high_price"] == -1e-8
        assert history["volume_exact"] == Decimal("0E-8") and history["volume"] == 0.0
        assert history["trade_count"] == 1234567
        assert writes["ticker_by_day"].key == ("BTCUSDT", date(2024, 1, 1), 1_704_067_200_123, 1_704_067_200_123_456)
        assert writes["ticker_by_day"].timestamp == TS_US
        assert writes["latest_prices"].key == ("BTCUSDT",)

    def test_columns_the_source_table_lacks_are_left_unset(self, mapping):
        history = values(by_table(mapping.writes(event("public.ticker_24h", Op.CREATE, after=TICKER)))["ticker_by_day"])
        assert history["bid_price"] is UNSET_VALUE and history["bid_price_exact"] is UNSET_VALUE

    def test_nulls_of_a_created_row_are_unset_in_history_but_written_to_latest_price(self, mapping):
        writes = by_table(mapping.writes(event("public.ticker_24h", Op.CREATE, after=TICKER)))
        assert values(writes["ticker_by_day"])["low_price"] is UNSET_VALUE
        assert values(writes["latest_prices"])["low_price"] is None

    def test_nulls_of_an_update_are_written_as_null(self, mapping):
        writes = by_table(mapping.writes(event("public.ticker_24h", Op.UPDATE, after=TICKER)))
        assert values(writes["ticker_by_day"])["low_price"] is None

    def test_a_toast_unavailable_column_is_left_unset(self, mapping):
        row = {**TICKER, "last_price": UNAVAILABLE}
        history = values(by_table(mapping.writes(event("public.ticker_24h", Op.UPDATE, after=row)))["ticker_by_day"])
        assert history["last_price"] is UNSET_VALUE and history["last_price_exact"] is UNSET_VALUE

    def test_a_delete_removes_the_history_row_and_keeps_the_latest_price(self, mapping):
        before = {"symbol": "BTCUSDT", "event_time": TICKER["event_time"], "last_price": None}
        writes = mapping.writes(event("public.ticker_24h", Op.DELETE, before=before))
        assert [(w.target.table, w.is_delete) for w in writes] == [("ticker_by_day", True)]
        assert writes[0].key == ("BTCUSDT", date(2024, 1, 1), 1_704_067_200_123, 1_704_067_200_123_456)
        assert writes[0].timestamp == TS_US

    def test_a_trade_delete_without_trade_time_goes_to_the_dlq_rather_than_guessing(self, mapping):
        before = {"symbol": "BTCUSDT", "trade_id": 42, "price": None, "trade_time": None}
        with pytest.raises(UnmappableRecord, match="trade_time.*REPLICA IDENTITY FULL"):
            mapping.writes(event("public.trades", Op.DELETE, before=before))

    def test_a_trade_delete_with_a_full_before_image_addresses_its_day(self, mapping):
        before = {"symbol": "BTCUSDT", "trade_id": 42, "price": Decimal("1.00000000"),
                  "qty": Decimal("2.00000000"), "trade_time": datetime(2024, 3, 5, 23, 59, tzinfo=UTC)}
        (write,) = mapping.writes(event("public.trades", Op.DELETE, before=before))
        assert write.is_delete and write.key == ("BTCUSDT", date(2024, 3, 5), 1_709_683_140_000, 42)

    def test_an_update_that_moves_the_target_key_deletes_the_old_row(self, mapping):
        old = {"symbol": "BTCUSDT", "trade_id": 42, "price": Decimal(1), "qty": Decimal(1),
               "trade_time": datetime(2024, 3, 5, tzinfo=UTC)}
        new = {**old, "trade_time": datetime(2024, 3, 6, tzinfo=UTC)}
        writes = mapping.writes(event("public.trades", Op.UPDATE, before=old, after=new))
        assert [(w.is_delete, w.key[1]) for w in writes] == [(True, date(2024, 3, 5)), (False, date(2024, 3, 6))]

    @pytest.mark.parametrize(("interval", "bucket"), [("1m", date(2024, 2, 29)), ("30m", date(2024, 2, 29)),
                                                      ("1h", date(2024, 2, 1)), ("1d", date(2024, 2, 1))])
    def test_klines_are_bucketed_by_day_below_an_hour_and_by_month_above(self, mapping, interval, bucket):
        row = {"symbol": "ETHUSDT", "interval": interval, "open_time": datetime(2024, 2, 29, 13, tzinfo=UTC),
               "close": Decimal("2300.50000000"), "number_of_trades": 100}
        (write,) = mapping.writes(event("public.klines", Op.READ, after=row))
        assert write.key[:3] == ("ETHUSDT", interval, bucket)
        assert values(write)["close_exact"] == Decimal("2300.50000000") and values(write)["number_of_trades"] == 100

    def test_an_unknown_kline_interval_is_unmappable(self, mapping):
        row = {"symbol": "ETHUSDT", "interval": "7m", "open_time": datetime(2024, 2, 29, tzinfo=UTC)}
        with pytest.raises(UnmappableRecord, match="unknown kline interval '7m'"):
            mapping.writes(event("public.klines", Op.CREATE, after=row))

    def test_a_null_key_column_is_unmappable(self, mapping):
        with pytest.raises(UnmappableRecord, match="order_book: key column level"):
            mapping.writes(event("public.order_book", Op.CREATE, after={"symbol": "X", "side": "bid", "level": None}))

    def test_a_float_where_an_exact_decimal_is_mapped_is_unmappable(self, mapping):
        row = {**TICKER, "last_price": 43210.12}
        with pytest.raises(UnmappableRecord, match="last_price_exact <- last_price: expected an exact decimal"):
            mapping.writes(event("public.ticker_24h", Op.CREATE, after=row))

    def test_schemaless_records_are_unmappable(self, mapping):
        with pytest.raises(UnmappableRecord, match="no Connect schema"):
            mapping.writes(event("public.ticker_24h", Op.CREATE, after=TICKER, typed=False))

    def test_an_unmapped_table_is_unmappable_and_skip_tables_are_skipped(self, mapping):
        with pytest.raises(UnmappableRecord, match="no mapping for source table 'public.type_zoo'"):
            mapping.writes(event("public.type_zoo", Op.CREATE, after={"id": 1}))
        assert mapping.is_skipped(event("public.cdc_heartbeat", Op.UPDATE, after={"id": 1}))
        assert not mapping.is_skipped(event("public.ticker_24h", Op.UPDATE, after=TICKER))

    def test_any_topic_prefix_maps_by_source_table(self, mapping):
        for topic in ("crypto.public.ticker_24h", "cdc.public.ticker_24h", "whatever"):
            assert mapping.writes(event("public.ticker_24h", Op.CREATE, after=TICKER, topic=topic))


TOAST_DOC = {"tables": {"public.toast_demo": {"topics": ["crypto.*"], "targets": [
    {"table": "toast", "columns": {"id": "id", "payload": "payload"}}]}}}


class TestTopicGlobs:

    def test_a_table_restricted_to_topics_rejects_other_topics(self):
        compiled = compile_mapping(parse_mapping(TOAST_DOC), {"toast": TableSchema(
            "toast", {"id": "int", "payload": "text"}, ("id",))})
        row = {"id": 1, "payload": "x"}
        assert compiled.writes(event("public.toast_demo", Op.CREATE, after=row, topic="crypto.public.toast_demo"))
        with pytest.raises(UnmappableRecord, match="not among crypto"):
            compiled.writes(event("public.toast_demo", Op.CREATE, after=row, topic="cdc.public.toast_demo"))

    def test_conversions_default_to_the_column_type(self):
        compiled = compile_mapping(parse_mapping(TOAST_DOC), {"toast": TableSchema(
            "toast", {"id": "int", "payload": "text"}, ("id",))})
        assert [c.conversion.name for c in compiled.writers[0].columns] == ["int", "text"]


class TestStatements:
    def test_values_are_bind_markers_and_every_write_carries_a_timestamp(self, mapping):
        writer = next(w for w in mapping.writers if w.table == "order_book")
        insert, delete = statements_for(writer.table, [c.column for c in writer.columns], writer.primary_key, "market")
        assert insert == ("INSERT INTO market.order_book (symbol, side, level, price, price_exact, quantity, "
                          "quantity_exact, last_update_id, snapshot_time) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                          "USING TIMESTAMP ?")
        assert delete == "DELETE FROM market.order_book USING TIMESTAMP ? WHERE symbol = ? AND side = ? AND level = ?"

    def test_each_writer_is_built_with_the_statements_prepared_for_its_table(self):
        prepared = []

        def prepare(cql):  # stands in for Session.prepare: a statement without bind-marker metadata
            prepared.append(cql)
            return types.SimpleNamespace(cql=cql, protocol_version=4, column_metadata=[])

        compiled = compile_mapping(load_mapping(), cql_table_schemas(), prepare, "market")
        assert len(prepared) == 2 * len(compiled.writers)  # one INSERT and one DELETE per target, nothing else
        book = next(w for w in compiled.writers if w.table == "order_book")
        assert book.statements.insert.cql.startswith("INSERT INTO market.order_book (symbol, side, level, price, ")
        assert book.statements.delete.cql == ("DELETE FROM market.order_book USING TIMESTAMP ? "
                                              "WHERE symbol = ? AND side = ? AND level = ?")
        assert book.statements.insert_binder.prepared is book.statements.insert
        assert book.statements.delete_binder.prepared is book.statements.delete

    def test_nothing_is_prepared_for_a_mapping_that_does_not_fit(self):
        prepared = []
        schemas = {name: schema for name, schema in cql_table_schemas().items() if name != "order_book"}
        with pytest.raises(MappingError, match="order_book"):
            compile_mapping(load_mapping(), schemas, prepared.append, "market")
        assert prepared == []

    def test_without_a_session_the_writers_have_no_statements(self, mapping):
        assert {w.statements for w in mapping.writers} == {None}


class TestStartupErrors:
    def test_every_problem_of_a_file_is_reported_at_once(self):
        doc = {"tables": {"public.t": {"targets": [{"table": "x; DROP TABLE y", "oops": 1, "columns": {
            "a": {"from": "a", "convert": "dbl"}, "b c": "b", "d": {"from": ["p", "q"], "convert": "day"}}}]}}}
        with pytest.raises(MappingError) as error:
            parse_mapping(doc, origin="m.yaml")
        message = str(error.value)
        assert message.startswith("m.yaml: invalid mapping:")
        assert "invalid Cassandra table 'x; DROP TABLE y'" in message
        assert "unknown key 'oops'" in message
        assert "unknown conversion 'dbl'" in message
        assert "invalid Cassandra column 'b c'" in message
        assert "conversion 'day' reads 1 source column(s), got 2" in message

    @pytest.mark.parametrize(("doc", "expected"), [
        ({"tables": {"ticker_24h": {"targets": []}}}, "must be written schema.table"),
        ({"tables": {}}, "must map at least one source table"),
        ({"version": 2, "tables": {"public.t": {"targets": [{"table": "t", "columns": {"a": "a"}}]}}},
         "unsupported mapping version 2"),
        ({"tables": {"public.t": {"targets": [{"table": "t", "on_delete": "drop", "columns": {"a": "a"}}]}}},
         "'drop' is not one of delete, ignore"),
        ({"skip_tables": ["public.t"], "tables": {"public.t": {"targets": [{"table": "t", "columns": {"a": "a"}}]}}},
         "public.t both mapped and skipped"),
    ])
    def test_structure_errors_name_the_place(self, doc, expected):
        with pytest.raises(MappingError, match=expected):
            parse_mapping(doc)

    def test_a_mapping_that_does_not_fit_the_cassandra_tables_is_refused(self):
        doc = {"tables": {"public.ticker_24h": {"targets": [
            {"table": "latest_prices", "columns": {"last_price": {"from": "last_price", "convert": "decimal"},
                                                   "no_such_column": "x"}},
            {"table": "no_such_table", "columns": {"a": "a"}}]}}}
        with pytest.raises(MappingError) as error:
            compile_mapping(parse_mapping(doc, origin="m.yaml"), cql_table_schemas(), keyspace="market")
        message = str(error.value)
        assert "does not fit the Cassandra schema of keyspace market" in message
        assert "conversion 'decimal' cannot feed last_price of type double" in message
        assert "column 'no_such_column' is not in Cassandra table latest_prices" in message
        assert "key column(s) symbol of latest_prices are not mapped" in message
        assert "Cassandra table 'no_such_table' does not exist" in message

    def test_an_unreadable_file_is_a_mapping_error(self, tmp_path):
        with pytest.raises(MappingError, match="cannot read mapping"):
            load_mapping(tmp_path / "missing.yaml")
        bad = tmp_path / "bad.yaml"
        bad.write_text("tables: [unclosed")
        with pytest.raises(MappingError, match="not valid YAML"):
            load_mapping(bad)


def test_the_package_path_keeps_every_public_name_callers_import():
    """cdc_consumer.mapping is a package (spec, compile, writer); the old module's public names stay importable
    from it (the C extension's callers and the other modules import them from there)."""
    import cdc_consumer.mapping as package

    names = ("MappingError", "UnmappableRecord", "ColumnSpec", "TargetSpec", "TableSpec", "MappingSpec",
             "default_mapping_path", "load_mapping", "parse_mapping", "MAX_MAPPING_BYTES", "MAX_MAPPING_NODES",
             "MAX_REPORTED_PROBLEMS", "ON_DELETE", "NULLS_ON_CREATE", "SCHEMA_EVOLUTION", "TableSchema",
             "describe_tables", "CompiledColumn", "Write", "TargetWriter", "native_converter", "CompiledTable",
             "CompiledMapping", "compile_mapping", "statements_for")
    assert [name for name in names if not hasattr(package, name)] == []
    assert package.default_mapping_path().name == "mapping.yaml" and package.default_mapping_path().is_file()
