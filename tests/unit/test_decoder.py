"""Decoding the real Debezium JSON captures: every record, every decimal digit, every envelope case."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from cdc_consumer import decoder as decoder_module
from cdc_consumer.decoder import Decoder
from cdc_consumer.events import UNAVAILABLE, Op, Snapshot
from tests.unit.debezium_records import (
    PRECISE,
    STRING_MODE,
    compact,
    headers,
    numeric_format_value,
    records,
    schemaless,
    transaction_record,
    value_doc,
)


def decode_line(decoder: Decoder, line: int, *, with_headers: bool = False):
    record = records(PRECISE)[line - 1]
    return decoder.decode(record["topic"], record["key"], record["value"],
                          headers()[line - 1] if with_headers else None, 0, line - 1)


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def test_every_record_of_the_main_capture_decodes():
    decoder = Decoder()
    events = [decode_line(decoder, n, with_headers=True) for n in range(1, len(records(PRECISE)) + 1)]
    assert len(events) == 35
    assert [n for n, e in enumerate(events, start=1) if e.tombstone] == [12, 15, 21, 30]
    assert all(e.op is not None for e in events if not e.tombstone)
    assert all(e.topic == r["topic"] for e, r in zip(events, records(PRECISE)))
    assert all(e.offset == n for n, e in enumerate(events))


def test_every_decimal_equals_the_string_mode_capture_digit_for_digit():
    """Fixed-scale decimals digit for digit; a variable-scale `numeric` by value, because Debezium itself
    sends -12.50 as scale 1 (README) while string mode prints "-12.50"."""
    decoder = Decoder()
    compared = 0
    for number, (precise, text) in enumerate(zip(records(PRECISE), records(STRING_MODE)), start=1):
        if precise["value"] is None:
            continue
        event = decoder.decode(precise["topic"], precise["key"], precise["value"])
        oracle = json.loads(text["value"])["payload"]
        for part in ("before", "after"):
            row = getattr(event, part)
            if row is None:
                continue
            for column, value in row.items():
                if isinstance(value, Decimal):
                    if column == "num_var":
                        assert value == Decimal(oracle[part][column]), (number, part, column)
                    else:
                        assert format(value, "f") == oracle[part][column], (number, part, column)
                    compared += 1
    assert compared == 88  # every decimal value in the capture (tools/verify.py counts the same)


def test_decimals_keep_their_schema_scale_and_every_digit_beyond_28():
    after = decode_line(Decoder(), 8).after
    assert after["price_change"] == Decimal("-0.00000001")
    assert after["price_change"].as_tuple().exponent == -8
    assert format(after["last_price"], "f") == "0.00000000"
    assert format(after["price_change_percent"], "f") == "-100.0000"
    assert format(after["quote_volume"], "f") == "9999999999999999999999.99999999"  # 30 digits


def test_variable_scale_decimals_use_the_scale_each_value_carries():
    decoder = Decoder()
    assert decode_line(decoder, 5).after["num_var"] == Decimal("3.14159")
    assert format(decode_line(decoder, 26).after["num_var"], "f") == "-12.5"  # Debezium sends -12.50 as scale 1
    assert format(decode_line(decoder, 28).after["num_var"], "f") == "2.718281828459045235360287"
    assert format(decode_line(decoder, 25).after["num_var"], "f") == "100000000000000000000"


def test_key_and_source_of_a_snapshot_row():
    event = decode_line(Decoder(), 1)
    assert event.op is Op.READ
    assert event.key == {"symbol": "BTCUSDT", "event_time": utc(2024, 1, 1, 0, 0, 0, 123456)}
    assert event.source.snapshot is Snapshot.FIRST
    assert (event.source.db, event.source.schema, event.source.table) == ("crypto_db", "public", "ticker_24h")
    assert event.source.ts_us == 1795268899118966
    assert event.source.tx_id == value_doc(1)["payload"]["source"]["txId"]
    assert event.source.lsn == value_doc(1)["payload"]["source"]["lsn"]
    assert event.ts_us == value_doc(1)["payload"]["ts_us"]
    assert event.table == "public.ticker_24h"


def test_streaming_events_say_snapshot_false():
    assert decode_line(Decoder(), 8).source.snapshot is Snapshot.FALSE


def test_update_under_default_replica_identity_has_no_before():
    event = decode_line(Decoder(), 10)
    assert event.op is Op.UPDATE and event.before is None
    assert event.after["last_price"] == Decimal("43999.99000000")


def test_delete_has_key_columns_in_before_and_is_followed_by_a_tombstone():
    decoder = Decoder()
    delete, tomb = decode_line(decoder, 14), decode_line(decoder, 15)
    assert delete.op is Op.DELETE and delete.after is None
    assert delete.before["symbol"] == "BNBUSDT" and delete.before["last_price"] is None
    assert tomb.tombstone and tomb.op is None and tomb.source is None
    assert tomb.key == delete.key


def test_primary_key_change_headers_are_exposed_and_decodable():
    decoder = Decoder()
    delete, tomb, create = (decode_line(decoder, n, with_headers=True) for n in (11, 12, 13))
    assert decoder.key_headers(delete.headers) == {"newkey": {"symbol": "ETHBUSD", "event_time": utc(2024, 1, 1)}}
    assert decoder.key_headers(tomb.headers) == {"newkey": {"symbol": "ETHBUSD", "event_time": utc(2024, 1, 1)}}
    assert decoder.key_headers(create.headers) == {"oldkey": {"symbol": "ETHUSDT", "event_time": utc(2024, 1, 1)}}
    assert delete.source.tx_id == create.source.tx_id
    assert b'"payload":"crypto"' in create.headers["__debezium.context.connectorLogicalName"]


def test_primary_key_change_headers_from_connects_default_header_converter():
    """Kafka Connect's SimpleHeaderConverter (the worker default) writes the key struct as schema-less JSON;
    this text is what connect-api 4.3.1 produced for a key with a quote and a Decimal(8) of -1E-8."""
    header = b'{"symbol":"ETH\\"BUSD","event_time":"2024-01-01T00:00:00.000000Z","price":-1E-8}'
    keys = Decoder().key_headers({"__debezium.newkey": header})
    assert keys == {"newkey": {"symbol": 'ETH"BUSD', "event_time": "2024-01-01T00:00:00.000000Z",
                               "price": Decimal("-0.00000001")}}
    assert isinstance(keys["newkey"]["price"], Decimal)


def test_keyless_table_has_a_null_key():
    event = decode_line(Decoder(), 31)
    assert event.key is None and event.op is Op.CREATE
    assert event.after["qty"] == Decimal("1.50000000")


def test_unchanged_toast_column_is_the_unavailable_sentinel_not_null_and_not_text():
    decoder = Decoder()
    created, updated = decode_line(decoder, 32), decode_line(decoder, 33)
    assert len(created.after["payload"]) == 2560
    assert updated.after["payload"] is UNAVAILABLE
    assert updated.after["note"] == "second"


def test_truncate_has_op_t_and_no_key_or_rows():
    event = decode_line(Decoder(), 35)
    assert event.op is Op.TRUNCATE
    assert (event.key, event.before, event.after) == (None, None, None)
    assert event.table == "public.klines"


def test_a_schema_that_gains_a_column_mid_stream_decodes_both_versions():
    decoder = Decoder()
    old, new, old_again = decode_line(decoder, 1), decode_line(decoder, 34), decode_line(decoder, 2)
    assert new.after["weighted_avg_price"] == Decimal("100.12345678")
    assert "weighted_avg_price" not in old.after and "weighted_avg_price" not in old_again.after


def test_the_type_zoo_row_decodes_to_python_values():
    after = decode_line(Decoder(), 5).after
    assert after["num_int"] == Decimal(42)
    assert after["big_col"] == 9007199254740993  # above 2**53: exact
    assert after["d"].isoformat() == "2024-02-29"
    assert after["ts"] == utc(2024, 2, 29, 12, 34, 56, 789012)
    assert after["ts3"] == utc(2024, 2, 29, 12, 34, 56, 789000)
    assert after["tstz"] == utc(2024, 2, 29, 7, 4, 56, 789012)  # +05:30 normalised to UTC by Debezium
    assert after["t"].isoformat() == "23:59:59.999999"
    assert after["iv"].total_seconds() == 37091106.5
    assert after["js"] == '{"a": 1, "b": [true, null], "c": "x"}'
    assert after["jsn"] == '{"k":  "v"}'  # json keeps its whitespace
    assert str(after["u"]) == "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
    assert after["label"] == 'Ünïcödé ✓ 日本語 🚀 "quoted" \\ backslash'
    assert after["bin"] == bytes.fromhex("deadbeef00ff")
    assert after["tags"] == ["a", "b c", "ü"]
    assert (after["dbl"], after["real_col"], after["small_col"], after["flag"]) == (1.5, 2.25, 7, True)


def test_extreme_dates_and_timestamps_of_the_capture():
    decoder = Decoder()
    row3, row4, row5 = (decode_line(decoder, n).after for n in (22, 23, 24))
    assert row3["ts3"] == utc(1969, 12, 31, 23, 59, 59, 999000)  # negative epoch millis
    assert row4["ts"] == utc(1900, 1, 1, 0, 0, 0, 1)
    assert row4["tstz"] == utc(2262, 4, 11, 23, 47, 16, 854775)
    assert row4["d"].isoformat() == "1969-12-31"
    assert row5["ts"] == utc(9999, 12, 31, 23, 59, 59, 999999)
    assert row5["d"].isoformat() == "9999-12-31"
    assert row5["tstz"] == utc(1, 1, 1)


def test_special_doubles_and_numeric_nan():
    decoder = Decoder()
    nan_row, minus_inf_row, numeric_nan_row = (decode_line(decoder, n).after for n in (25, 26, 27))
    assert nan_row["dbl"] != nan_row["dbl"]  # NaN
    assert nan_row["real_col"] == float("inf")
    assert minus_inf_row["dbl"] == float("-inf")
    assert numeric_nan_row["num_var"] is None  # precise mode sends numeric NaN as null
    assert decode_line(decoder, 22).after["dbl"] == -1e-300


def test_bytes_and_text_records_decode_the_same():
    record = records(PRECISE)[7]
    decoder = Decoder()
    from_text = decoder.decode(record["topic"], record["key"], record["value"])
    from_bytes = decoder.decode(record["topic"], record["key"].encode(), record["value"].encode())
    assert from_text.after == from_bytes.after and from_text.key == from_bytes.key


def test_confluent_kafka_headers_become_a_name_to_bytes_mapping():
    event = decode_line(Decoder(), 1, with_headers=True)
    assert set(event.headers) == {"__debezium.context.connectorLogicalName", "__debezium.context.taskId",
                                  "__debezium.context.connectorName", "__debezium.context.runId"}
    assert all(isinstance(v, bytes) for v in event.headers.values())


def test_json_with_other_spacing_takes_the_general_path_to_the_same_event():
    record = records(PRECISE)[7]
    spaced = json.dumps(json.loads(record["value"]), indent=1)
    decoder = Decoder()
    assert decoder.decode(record["topic"], record["key"], spaced).after == \
        decoder.decode(record["topic"], record["key"], record["value"]).after


def test_a_schema_holding_the_text_payload_as_a_key_still_decodes():
    doc = value_doc(8)
    after_schema = next(f for f in doc["schema"]["fields"] if f["field"] == "after")
    after_schema["fields"][0]["parameters"] = {"note": "x", "payload": "y"}  # `,"payload":` inside the schema
    event = Decoder().decode("t", None, compact(doc))
    assert event.after["quote_volume"] == Decimal("9999999999999999999999.99999999")


def test_numeric_decimal_format_keeps_json_numbers_exact():
    decoder = Decoder()
    precise = decode_line(decoder, 8).after
    numeric = decoder.decode("crypto.public.ticker_24h", None, numeric_format_value(8)).after
    assert b"9999999999999999999999.99999999," in numeric_format_value(8)  # a JSON number, not base64
    assert numeric == precise
    assert format(numeric["price_change"], "f") == "-0.00000001"  # sent as -1E-8
    assert format(numeric["last_price"], "f") == "0.00000000"  # sent as 0E-8
    again = decoder.decode("crypto.public.ticker_24h", None, numeric_format_value(1)).after  # same schema, cached
    assert again == decode_line(decoder, 1).after


def test_schemas_disabled_passes_values_through_untyped():
    record = records(PRECISE)[7]
    event = Decoder().decode(record["topic"], schemaless(record["key"]), schemaless(record["value"]))
    assert event.typed is False
    assert event.op is Op.CREATE and event.source.snapshot is Snapshot.FALSE
    assert event.after["price_change"] == "/w=="  # undecoded: without a schema the scale is unknown
    assert event.key == {"symbol": "BNBUSDT", "event_time": "2024-01-02T10:00:00.500000Z"}


def test_schemas_disabled_still_marks_unchanged_toast_values():
    record = records(PRECISE)[32]
    event = Decoder().decode(record["topic"], schemaless(record["key"]), schemaless(record["value"]))
    assert event.after["payload"] is UNAVAILABLE


def test_decimal_handling_mode_string_gives_the_text_unchanged():
    record = records(STRING_MODE)[7]
    after = Decoder().decode(record["topic"], record["key"], record["value"]).after
    assert after["quote_volume"] == "9999999999999999999999.99999999"


def test_decimal_handling_mode_double_gives_binary_floats():
    """double mode: numeric columns become Connect float64 and arrive as JSON numbers (lossy by design)."""
    doc = value_doc(8)
    exact = decode_line(Decoder(), 8).after
    for part in ("before", "after"):
        struct = next(f for f in doc["schema"]["fields"] if f["field"] == part)
        for column in struct["fields"]:
            if column.pop("name", None) == "org.apache.kafka.connect.data.Decimal":
                column.update(type="double")
                column.pop("parameters")
                doc["payload"]["after"][column["field"]] = float(exact[column["field"]])
    assert b'"quote_volume":1e+22' in compact(doc)  # Debezium sends 9999999999999999999999.99999999 as 1.0E22
    after = Decoder().decode("crypto.public.ticker_24h", None, compact(doc)).after
    assert after["quote_volume"] == 1e22 and isinstance(after["quote_volume"], float)
    assert after["price_change"] == -1e-8


def test_transaction_metadata_records_and_the_per_event_block():
    decoder = Decoder()
    key, value = transaction_record("BEGIN", "1110:29690416", 1795268903013)
    begin = decoder.decode("crypto.transaction", key, value)
    key, value = transaction_record("END", "1110:29691184", 1795268903014, {"public.klines": 5})
    end = decoder.decode("crypto.transaction", key, value)
    assert begin.is_transaction_marker and begin.op is None and begin.transaction["status"] == "BEGIN"
    assert end.transaction["data_collections"] == [{"data_collection": "public.klines", "event_count": 5}]
    assert end.transaction["event_count"] == 5 and end.key == {"id": "1110:29691184"}

    doc = value_doc(16)
    doc["payload"]["transaction"] = {"id": "1110:29690416", "total_order": 1, "data_collection_order": 1}
    event = decoder.decode("crypto.public.klines", None, compact(doc))
    assert event.tx_block == {"id": "1110:29690416", "total_order": 1, "data_collection_order": 1}
    assert not event.is_transaction_marker


@pytest.mark.parametrize("line", [1, 3, 8, 33])
def test_decoding_twice_gives_equal_events(line):
    decoder = Decoder()
    assert decode_line(decoder, line) == decode_line(decoder, line)  # cached compile, fresh payload each time


def test_the_json_extension_is_built_and_used_by_default():
    """`make venv` (pip install -e .) compiles it; when it could not, the Python converters decode everything."""
    assert decoder_module._json_native is not None
    assert Decoder().native
    assert not Decoder(native=False).native


def test_without_the_json_extension_the_python_path_decodes_everything(monkeypatch):
    monkeypatch.setattr(decoder_module, "_json_native", None)
    decoder = Decoder()
    assert not decoder.native
    line = records(PRECISE)[0]
    assert decoder.decode(line["topic"], line["key"].encode(), line["value"].encode()).after["symbol"] == "BTCUSDT"
