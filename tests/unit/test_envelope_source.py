"""The envelope's own timestamps: `ts_us`, or `ts_ms` from Debezium before 2.6, always as an integer."""

from __future__ import annotations

import pytest

from cdc_consumer.decoder import Decoder
from cdc_consumer.errors import DecodeError
from tests.unit.debezium_records import compact

TIMESTAMP = "org.apache.kafka.connect.data.Timestamp"


def envelope(ts_ms_schema: dict, ts_ms) -> bytes:
    """A change envelope without ts_us whose top-level ts_ms has the given Connect schema."""
    row_schema = {"type": "struct", "optional": True, "name": "t.public.t.Value",
                  "fields": [{"type": "int32", "optional": False, "field": "id"}]}
    schema = {"type": "struct", "optional": False, "name": "t.public.t.Envelope", "fields": [
        {**row_schema, "field": "before"}, {**row_schema, "field": "after"},
        {"type": "string", "optional": False, "field": "op"}, {**ts_ms_schema, "field": "ts_ms"}]}
    return compact({"schema": schema, "payload": {"before": None, "after": {"id": 1}, "op": "c", "ts_ms": ts_ms}})


def test_ts_ms_in_milliseconds_becomes_ts_us():
    event = Decoder().decode("t.public.t", None, envelope({"type": "int64", "optional": True}, 1_700_000_000_123))
    assert event.ts_us == 1_700_000_000_123_000


def test_ts_ms_typed_as_a_timestamp_is_still_read_as_epoch_milliseconds():
    value = envelope({"type": "int64", "optional": True, "name": TIMESTAMP, "version": 1}, 1_700_000_000_123)
    assert Decoder().decode("t.public.t", None, value).ts_us == 1_700_000_000_123_000


@pytest.mark.parametrize("ts_ms", ["1700000000123", 1.7e12, True])
def test_ts_ms_that_is_not_an_integer_is_a_named_decode_error(ts_ms):
    value = envelope({"type": "int64", "optional": True}, ts_ms)
    with pytest.raises(DecodeError, match="ts_ms: expected epoch milliseconds"):
        Decoder().decode("t.public.t", None, value, None, 0, 5)
