"""Rules written twice, in C for speed and in Python as the original, pinned together over the same inputs.

- Date arithmetic: day counts and epoch counts to dates and UTC datetimes (_native_common.h civil_from_days,
  utc_datetime: the JSON and Avro decoders) and back (_cql_native.c days_from_civil, utc_micros: the mapping's
  timestamp, epoch_us, day, month and date conversions, and the CQL date serializer).
- Kline buckets: _cql_native.c's kline_bucket against conversions.to_kline_bucket (C reads Python's interval sets;
  the truncation to a day or a month is written in both).
- Decimals: two's complement + scale to Decimal (_native_common.h against debezium.py and fastavro's path), and
  Decimal to CQL decimal bytes (_cql_native.c against the Python loop and the driver's DecimalType).

Each rule gets the edge cases by name (epoch boundaries, negative timestamps, leap days, the first and last
instants Python can hold and one past them, every kline interval, decimals at the 8- and 16-byte switches, large
precision, negative scale, zero) and then hypothesis. Where a third, independent oracle exists (a literal, or a
derivation that shares no code with either twin) it is checked too.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import orjson
import pytest
from cassandra import cqltypes
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from cdc_consumer.conversions import HOUR_OR_LONGER_INTERVALS, SUB_HOUR_INTERVALS
from cdc_consumer.cql_values import StatementBinder
from tests.unit.debezium_records import minimal_twos_complement
from tests.unit.test_avro_native import DictSource, decimal_type, framed, twos_complement
from tests.unit.test_avro_native import decoders as avro_decoders
from tests.unit.test_cql_native import PROTOCOL, Prepared, assert_same_outcome, assert_serializes_like_python, writer_of
from tests.unit.test_json_native import b64, decimal_schema
from tests.unit.test_json_native import decoders as json_decoders

pytest.importorskip("cdc_consumer._cql_native")
pytest.importorskip("cdc_consumer._json_native")
pytest.importorskip("cdc_consumer._avro_native")

EXAMPLES = 60  # per property: the named edge cases carry most of the weight; make sanitize runs these too
EPOCH = date(1970, 1, 1)
FIRST_DAY, LAST_DAY = (date.min - EPOCH).days, (date.max - EPOCH).days  # -719162, 2932896
FIRST_MICROS = (datetime.min.replace(tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
LAST_MICROS = (datetime.max.replace(tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
LEAP_DAYS = [date(2000, 2, 29), date(2024, 2, 29), date(1972, 2, 29), date(1968, 2, 29), date(4, 2, 29),
             date(1600, 2, 29), date(9996, 2, 29)]
NOT_LEAP = [date(1900, 2, 28), date(1900, 3, 1), date(2100, 2, 28), date(2100, 3, 1), date(1700, 3, 1)]
EDGE_DAYS = sorted({FIRST_DAY - 1, FIRST_DAY, FIRST_DAY + 1, -146097, -36524, -1461, -366, -365, -1, 0, 1, 59, 365,
                    366, 10957, 146097, LAST_DAY - 1, LAST_DAY, LAST_DAY + 1, -(2 ** 31), 2 ** 31 - 1}
                   | {(d - EPOCH).days + shift for d in LEAP_DAYS + NOT_LEAP for shift in (-1, 0, 1)})
EDGE_MICROS = sorted({FIRST_MICROS - 1, FIRST_MICROS, FIRST_MICROS + 1, -86_400_000_001, -86_400_000_000, -1_000_001,
                      -1000, -1, 0, 1, 999, 1000, 86_399_999_999, 86_400_000_000, LAST_MICROS - 1, LAST_MICROS,
                      LAST_MICROS + 1, -(2 ** 63), 2 ** 63 - 1}
                     | {(d - EPOCH).days * 86_400_000_000 + shift for d in LEAP_DAYS + NOT_LEAP for shift in (-1, 0)})
DAYS = st.one_of(st.sampled_from(EDGE_DAYS), st.integers(FIRST_DAY - 10, LAST_DAY + 10),
                 st.integers(-(2 ** 31), 2 ** 31 - 1))
MICROS = st.one_of(st.sampled_from(EDGE_MICROS), st.integers(FIRST_MICROS - 10, LAST_MICROS + 10),
                   st.integers(-(2 ** 63), 2 ** 63 - 1))
DATE_NAMES = ["io.debezium.time.Date", "org.apache.kafka.connect.data.Date"]
TIMESTAMP_NAMES = {"io.debezium.time.Timestamp": 1000, "org.apache.kafka.connect.data.Timestamp": 1000,
                   "io.debezium.time.MicroTimestamp": 1, "io.debezium.time.NanoTimestamp": None}


def expected_moment(micros: int) -> datetime | None:
    """The independent oracle: timedelta arithmetic from the epoch; None outside datetime's range."""
    if not FIRST_MICROS <= micros <= LAST_MICROS:
        return None
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)


def counts_of(micros: int) -> dict[str, int]:
    """The wire count of each timestamp type for an instant (ms types only when it is a whole millisecond)."""
    counts = {}
    for name, divisor in TIMESTAMP_NAMES.items():
        if divisor is None:
            counts[name] = micros * 1000
        elif micros % divisor == 0:
            counts[name] = micros // divisor
    return counts


# ---------------------------------------------------------------------------- decoding: dates


def json_outcomes(fields: list[dict], payload: dict) -> tuple:
    key = orjson.dumps({"schema": {"type": "struct", "fields": fields}, "payload": payload})
    results = []
    for decoder in json_decoders():
        try:
            results.append(("ok", decoder.decode_key(key)))
        except Exception as exc:  # noqa: BLE001 - compared between both paths
            results.append(("raised", type(exc), str(exc)))
    return tuple(results)


def avro_outcomes(fields: list[dict], datum: dict) -> tuple:
    schema = {"type": "record", "name": "R", "fields": fields}
    data = framed(1, schema, datum)
    results = []
    for decoder in avro_decoders(DictSource({1: schema})):
        try:
            results.append(("ok", decoder.decode_key(data)))
        except Exception as exc:  # noqa: BLE001 - compared between both paths
            results.append(("raised", type(exc), str(exc)))
    return tuple(results)


def assert_twins(outcomes: tuple, expected: dict | None) -> None:
    native, python = outcomes
    assert repr(native) == repr(python)  # same types, values, tzinfo; or the same error and message
    if expected is None:
        assert native[0] == "raised", native
    else:
        assert native == ("ok", expected)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(DAYS)
def test_day_counts_decode_to_the_same_date_in_c_and_python(days):
    expected_date = EPOCH + timedelta(days=days) if FIRST_DAY <= days <= LAST_DAY else None
    for name in DATE_NAMES:
        json_field = {"type": "int32", "optional": True, "name": name, "field": "d"}
        expected = None if expected_date is None else {"d": expected_date}
        if -(2 ** 31) <= days < 2 ** 31:
            assert_twins(json_outcomes([json_field], {"d": days}), expected)
            assert_twins(avro_outcomes([{"name": "d", "type": {"type": "int", "connect.name": name}}], {"d": days}),
                         expected)


@pytest.mark.parametrize("days", EDGE_DAYS)
def test_edge_day_counts_decode_to_the_same_date(days):
    test_day_counts_decode_to_the_same_date_in_c_and_python.hypothesis.inner_test(days)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(MICROS)
def test_epoch_counts_decode_to_the_same_utc_datetime_in_c_and_python(micros):
    moment = expected_moment(micros)
    for name, count in counts_of(micros).items():
        if not -(2 ** 63) <= count < 2 ** 63:
            continue
        expected = None if moment is None else {"t": moment}
        json_field = {"type": "int64", "optional": True, "name": name, "field": "t"}
        assert_twins(json_outcomes([json_field], {"t": count}), expected)
        assert_twins(avro_outcomes([{"name": "t", "type": {"type": "long", "connect.name": name}}], {"t": count}),
                     expected)


@pytest.mark.parametrize("micros", EDGE_MICROS)
def test_edge_epoch_counts_decode_to_the_same_utc_datetime(micros):
    test_epoch_counts_decode_to_the_same_utc_datetime_in_c_and_python.hypothesis.inner_test(micros)


# ------------------------------------------------------------------------ mapping: dates back


TIME_WRITER = writer_of(("ms", "s", "timestamp"), ("us", "s", "epoch_us"), ("day", "s", "day"),
                        ("month", "s", "month"), ("date", "s", "date"))
EDGE_MOMENTS = [expected_moment(m) for m in EDGE_MICROS if expected_moment(m) is not None]
ZONES = [None, UTC, timezone(timedelta(hours=14)), timezone(timedelta(hours=-12)), timezone(timedelta(minutes=-1))]


def test_edge_datetimes_map_to_the_same_counts_and_days_in_c_and_python():
    for moment in EDGE_MOMENTS:
        for zone in ZONES:
            try:
                value = moment.astimezone(zone) if zone is not None else moment.replace(tzinfo=None)
            except OverflowError:
                continue  # the instant has no wall time in that zone within years 1..9999
            write = assert_same_outcome(TIME_WRITER, {"k": "k", "s": value})
            assert write[0] == "write"
            micros = (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
            ms, us, day, month, _ = write[3][1:]
            assert (ms, us, day, month) == (micros // 1000, micros, moment.date(), moment.date().replace(day=1))


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.integers(FIRST_MICROS, LAST_MICROS), st.sampled_from(ZONES))
def test_datetimes_map_to_the_same_counts_and_days_in_c_and_python(micros, zone):
    moment = expected_moment(micros)
    try:
        value = moment.astimezone(zone) if zone is not None else moment.replace(tzinfo=None)
    except OverflowError:
        return
    write = assert_same_outcome(TIME_WRITER, {"k": "k", "s": value})
    assert write[3][1:3] == [micros // 1000, micros]


@pytest.mark.parametrize("value", [date.min, date.max, EPOCH, EPOCH - timedelta(days=1), *LEAP_DAYS, *NOT_LEAP])
def test_edge_dates_serialize_like_the_python_loop_and_the_driver(value):
    result = assert_serializes_like_python(StatementBinder(Prepared(cqltypes.SimpleDateType)), [value])
    assert result[1] == [cqltypes.SimpleDateType.serialize(value, PROTOCOL)]
    days = (value - EPOCH).days  # CQL date: unsigned days with the epoch at 2^31
    assert result[1] == [(days + 2 ** 31).to_bytes(4, "big")]


# ------------------------------------------------------------------------------- kline buckets

BINANCE_INTERVALS = ["1s", "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w", "1M"]
UNKNOWN_INTERVALS = ["", "2x", "1H", "60m", "1y", "1mo", " 1m", "1m ", "1S"]
BUCKET_WRITER = writer_of(("bucket", ("open_time", "interval"), "kline_bucket"))


def test_the_interval_sets_c_reads_are_binances_intervals_split_at_one_hour():
    assert SUB_HOUR_INTERVALS == {"1s", "1m", "3m", "5m", "15m", "30m"}
    assert SUB_HOUR_INTERVALS | HOUR_OR_LONGER_INTERVALS == set(BINANCE_INTERVALS)
    assert not SUB_HOUR_INTERVALS & HOUR_OR_LONGER_INTERVALS


@pytest.mark.parametrize("interval", BINANCE_INTERVALS + UNKNOWN_INTERVALS)
def test_every_kline_interval_buckets_the_same_in_c_and_python(interval):
    for moment in EDGE_MOMENTS + [expected_moment(0)]:
        for zone in ZONES:
            try:
                open_time = moment.astimezone(zone) if zone is not None else moment.replace(tzinfo=None)
            except OverflowError:
                continue
            result = assert_same_outcome(BUCKET_WRITER, {"k": "k", "open_time": open_time, "interval": interval})
            if interval in BINANCE_INTERVALS:
                day = moment.date()
                assert result[3][1] == (day if interval in SUB_HOUR_INTERVALS else day.replace(day=1))
            else:
                assert result[0] == "raised" and "unknown kline interval" in result[2]


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.integers(FIRST_MICROS, LAST_MICROS), st.sampled_from(BINANCE_INTERVALS + UNKNOWN_INTERVALS),
       st.sampled_from(ZONES))
def test_kline_buckets_are_the_same_in_c_and_python(micros, interval, zone):
    moment = expected_moment(micros)
    try:
        open_time = moment.astimezone(zone) if zone is not None else moment.replace(tzinfo=None)
    except OverflowError:
        return
    assert_same_outcome(BUCKET_WRITER, {"k": "k", "open_time": open_time, "interval": interval})


# ------------------------------------------------------------------------------------ decimals

SWITCHES = [2 ** 7, 2 ** 15, 2 ** 31, 2 ** 63, 2 ** 64, 2 ** 127, 2 ** 128, 10 ** 18, 10 ** 19, 10 ** 38, 10 ** 39]
EDGE_UNSCALED = sorted({0, 1, -1, *(s + d for s in SWITCHES for d in (-1, 0, 1)),
                        *(-(s + d) for s in SWITCHES for d in (-1, 0, 1)), 10 ** 999, -(10 ** 999), 10 ** 1000 - 1})
SCALES = [-1000, -20, -1, 0, 1, 8, 18, 38, 100, 1000]


@st.composite
def decimal_cases(draw) -> tuple[int, int, int | None, int]:
    """(unscaled, scale, precision or None, padding bytes): large precisions, negative scales, zero."""
    precision = draw(st.one_of(st.none(), st.integers(1, 1000)))
    scale = draw(st.one_of(st.sampled_from(SCALES), st.integers(-1000, 1000)))
    digits = draw(st.integers(0, min(precision or 1000, 1000) + 1))  # one more than allowed now and then
    unscaled = draw(st.one_of(st.sampled_from(EDGE_UNSCALED), st.integers(-(10 ** digits) + 1, 10 ** digits - 1)))
    return unscaled, scale, precision, draw(st.integers(0, 2))


def expected_decimal(unscaled: int, scale: int, precision: int | None) -> Decimal | None:
    """The independent oracle: Decimal's own parsing of '<unscaled>E<-scale>'; None past the precision."""
    if precision is not None and len(str(abs(unscaled))) > precision:
        return None
    return Decimal(f"{unscaled}E{-scale}")


def assert_decimal_twins(outcomes: tuple, expected: Decimal | None) -> None:
    native, python = outcomes
    assert repr(native) == repr(python)
    if expected is None:
        assert native[0] == "raised", native
    else:
        assert native[0] == "ok" and native[1]["p"].as_tuple() == expected.as_tuple()


def check_decimal(unscaled: int, scale: int, precision: int | None, padding: int) -> None:
    expected = expected_decimal(unscaled, scale, precision)
    raw = twos_complement(unscaled, padding)
    assert_decimal_twins(json_outcomes([decimal_schema("p", scale, precision)], {"p": b64(raw)}), expected)
    assert_decimal_twins(avro_outcomes([{"name": "p", "type": decimal_type(scale, precision)}], {"p": raw}), expected)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(decimal_cases())
@example((0, -1000, None, 2))
@example((0, 1000, 1, 0))
@example((-(10 ** 999), 1000, 1000, 1))
@example((10 ** 1000 - 1, -1000, 1000, 0))
def test_decimals_decode_to_the_same_decimal_in_c_and_python(case):
    check_decimal(*case)


@pytest.mark.parametrize("scale", SCALES)
def test_edge_decimals_decode_to_the_same_decimal_in_c_and_python(scale):
    for unscaled in EDGE_UNSCALED:
        for precision in (None, 1000):
            check_decimal(unscaled, scale, precision, 0)
    assert minimal_twos_complement(-(2 ** 63)) == b"\x80" + b"\x00" * 7  # the helper itself at a switch


CQL_DECIMALS = st.builds(lambda unscaled, exponent: Decimal(f"{unscaled}E{exponent:+d}"),
                         st.one_of(st.sampled_from(EDGE_UNSCALED), st.integers(-(10 ** 1000) + 1, 10 ** 1000 - 1)),
                         st.integers(-1100, 1100))
EDGE_CQL_DECIMALS = [Decimal("0"), Decimal("-0"), Decimal("0E-1000"), Decimal("-0E+1000"), Decimal("1E+1000"),
                     Decimal("-1E-1000"), Decimal(10 ** 38 - 1), Decimal(10 ** 38), Decimal(-(10 ** 38) + 1),
                     Decimal(2 ** 127 - 1), Decimal(2 ** 127), Decimal(-(2 ** 127)), Decimal(-(2 ** 127) - 1),
                     Decimal("1E+2147483648"), Decimal("1E-2147483647"), Decimal("1E-2147483648"),
                     Decimal("1.000"), Decimal("-12345678901234567890.123456789012345678")]


@pytest.mark.parametrize("value", EDGE_CQL_DECIMALS, ids=str)
def test_edge_decimals_serialize_like_the_python_loop_and_the_driver(value):
    check_cql_decimal(value)


@settings(max_examples=EXAMPLES, deadline=None)
@given(CQL_DECIMALS)
def test_decimals_serialize_like_the_python_loop_and_the_driver(value):
    check_cql_decimal(value)


def check_cql_decimal(value: Decimal) -> None:
    result = assert_serializes_like_python(StatementBinder(Prepared(cqltypes.DecimalType)), [value])
    sign, digits, exponent = value.as_tuple()
    unscaled = int("".join(map(str, digits))) * (-1 if sign else 1)
    if -(2 ** 31) <= -exponent < 2 ** 31:
        assert result == ("ok", [cqltypes.DecimalType.serialize(value, PROTOCOL)])
        # CQL decimal: int32 scale, then the unscaled value as a minimal two's-complement varint
        assert result[1][0] == (-exponent).to_bytes(4, "big", signed=True) + minimal_twos_complement(unscaled)
    else:
        assert result[0] == "raised"  # a scale int32 cannot hold: the driver's error on both paths
