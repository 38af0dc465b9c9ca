"""The C loops of _cql_native give exactly what the Python loops they replace give (those are the oracle).

Mapping: TargetWriter._upsert (the C Converter) against TargetWriter.upsert_python, value by value and type
by type, errors by type and message. Binding: StatementBinder.serialize (the C Serializer) against
serialize_python and the driver's own serializers.
"""

from __future__ import annotations

import math
import struct
import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from cassandra import cqltypes
from cassandra.query import UNSET_VALUE
from hypothesis import given, settings
from hypothesis import strategies as st

from cdc_consumer import cql_values
from cdc_consumer.conversions import CONVERSIONS, Conversion
from cdc_consumer.cql_values import StatementBinder
from cdc_consumer.errors import ConversionError, UnmappableRecord
from cdc_consumer.events import UNAVAILABLE
from cdc_consumer.mapping import CompiledColumn, TargetWriter, Write, compile_mapping, load_mapping
from cdc_consumer.mapping import writer as mapping_writer
from tests.unit.cql_tables import cql_table_schemas

native = pytest.importorskip("cdc_consumer._cql_native")

PROTOCOL = 4
NULLS = (UNSET_VALUE, None)


class DecimalSubclass(Decimal):
    pass


class DatetimeSubclass(datetime):
    pass


class StrSubclass(str):
    pass


# ------------------------------------------------------------------------------------- mapping


def writer_of(*columns: tuple[str, str | tuple[str, ...], str | Conversion], key: tuple[str, ...] = ("k",),
              nulls_on_create: str = "skip") -> TargetWriter:
    """A writer of column k <- k (text) and the given (column, source(s), conversion) columns."""
    compiled = [CompiledColumn("k", ("k",), CONVERSIONS["text"])]
    for column, sources, conversion in columns:
        sources = (sources,) if isinstance(sources, str) else sources
        conversion = CONVERSIONS[conversion] if isinstance(conversion, str) else conversion
        compiled.append(CompiledColumn(column, sources, conversion))
    return TargetWriter("t", tuple(compiled), key, 1, "delete", nulls_on_create)


def same(a, b) -> bool:
    """Equal and of the same type, NaN equal to NaN."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b) and math.copysign(1, a) == math.copysign(1, b)
    if isinstance(a, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    return a == b


def outcome(upsert, row, null):
    """The Write's (key, values) or the exception's (type, message, cause type, cause message)."""
    try:
        write = upsert(row, null, 17, (17, 0))
    except Exception as exc:  # noqa: BLE001 - compared between both paths
        cause = exc.__cause__
        return ("raised", type(exc), str(exc), type(cause), str(cause) if cause is not None else None)
    assert type(write) is Write and write.timestamp == 17 and write.order == (17, 0)
    return ("write", write.target, write.key, write.values)


def assert_same_outcome(writer: TargetWriter, row: dict, null=UNSET_VALUE):
    assert writer._upsert is not writer.upsert_python  # the C loop is in use
    ours, oracle = outcome(writer._upsert, row, null), outcome(writer.upsert_python, row, null)
    if oracle[0] == "write":
        assert ours[0] == "write", ours
        assert ours[1] is oracle[1]
        assert len(ours[2]) == len(oracle[2]) and all(map(same, ours[2], oracle[2])), (ours[2], oracle[2])
        assert len(ours[3]) == len(oracle[3]) and all(map(same, ours[3], oracle[3])), (ours[3], oracle[3])
    else:
        assert ours == oracle
    return ours


UTC_MOMENT = datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=UTC)
VALUES = [
    None, UNSET_VALUE, UNAVAILABLE, True, False, 0, 1, -1, 127, 128, -129, 32767, 32768, -32768, -32769,
    2**31 - 1, 2**31, -(2**31), -(2**31) - 1, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**200, 0.0, -0.0, 1.5,
    float("nan"), float("inf"), 1e308, 3.4e39, "", "abc", "Ünïcödé ✓ 🚀", "\ud83d", StrSubclass("sub"), "1.25",
    "HL6NEAA=", "2024-01-01T00:00:00.000000Z", "2024-01-01T05:30:00+05:30", "not a time", "1m", "1h",
    Decimal("0"), Decimal("-0"), Decimal("0E-8"), Decimal("-0.00000001"), Decimal("1E+3"), Decimal("-5E+2"),
    Decimal("1234.56000000"), Decimal("9999999999999999999999.99999999"), Decimal("1E+400"), Decimal("1E-400"),
    Decimal("12345678901234567890123456789012345678"), Decimal("123456789012345678901234567890123456789"),
    Decimal("NaN"), Decimal("-Infinity"), Decimal("sNaN"), DecimalSubclass("2.5"), UTC_MOMENT,
    datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), datetime(1, 1, 1, tzinfo=UTC),
    datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), datetime(2024, 1, 1, 2, 0),
    datetime(2024, 1, 1, 2, 0, tzinfo=timezone(timedelta(hours=5, minutes=30))),
    datetime(2024, 1, 1, 2, 0, tzinfo=timezone(timedelta(hours=-8))),
    datetime(2024, 3, 31, 2, 30, tzinfo=ZoneInfo("Europe/Berlin")), DatetimeSubclass(2024, 1, 1, tzinfo=UTC),
    date(2024, 2, 29), date(1, 1, 1), b"", b"\xde\xad", bytearray(b"\x01"), memoryview(b"x"),
    uuid.UUID(int=5), "00000000-0000-0000-0000-000000000005", [1], {"a": 1}, object,
]


@pytest.mark.parametrize("name", sorted(n for n, c in CONVERSIONS.items() if c.arity == 1))
@pytest.mark.parametrize("null", NULLS)
def test_every_single_source_conversion_gives_the_python_loops_values_and_errors(name, null):
    writer = writer_of(("c", "s", name))
    for value in VALUES:
        assert_same_outcome(writer, {"k": "key", "s": value}, null)
    assert_same_outcome(writer, {"k": "key"}, null)  # the source table lacks the column


@pytest.mark.parametrize("null", NULLS)
def test_the_two_source_kline_bucket_gives_the_python_loops_values_and_errors(null):
    writer = writer_of(("bucket", ("open_time", "interval"), "kline_bucket"))
    times = [UTC_MOMENT, datetime(2024, 1, 31, 23, 0), datetime(2024, 2, 1, 1, 0, tzinfo=timezone(timedelta(hours=2))),
             "2024-01-01T00:00:00Z", None, UNAVAILABLE, UNSET_VALUE, 5]
    intervals = ["1s", "1m", "30m", "1h", "1d", "1M", "7x", StrSubclass("1m"), None, UNAVAILABLE, 5, ["1m"]]
    for open_time in times:
        for interval in intervals:
            assert_same_outcome(writer, {"k": "k", "open_time": open_time, "interval": interval}, null)
        assert_same_outcome(writer, {"k": "k", "open_time": open_time}, null)
        assert_same_outcome(writer, {"k": "k", "interval": "1m"}, null)


def test_conversions_outside_conversions_are_called_as_they_are():
    def shout(value):
        if value == "boom":
            raise ConversionError("no booms")
        if value == "crash":
            raise RuntimeError("not a conversion error")
        return value.upper()

    def pair(first, second):
        return f"{first}/{second}"

    writer = writer_of(("c", "s", Conversion("shout", 1, frozenset({"text"}), shout)),
                       ("d", "s", Conversion("double", 1, frozenset({"double"}), shout)),  # a name is not enough
                       ("p", ("a", "b"), Conversion("pair", 2, frozenset({"text"}), pair)),
                       ("q", ("a", "b"), Conversion("first", 1, frozenset({"text"}), lambda a, b: a)))
    for row in ({"k": "k", "s": "x", "a": 1, "b": 2}, {"k": "k", "s": "boom"}, {"k": "k", "s": "crash"},
                {"k": "k", "s": None, "a": None, "b": 2}, {"k": "k", "s": "x", "a": 1, "b": None}):
        for null in NULLS:
            assert_same_outcome(writer, row, null)
    with pytest.raises(RuntimeError, match="not a conversion error"):
        writer._upsert({"k": "k", "s": "crash"}, None, 1, ())


def test_conversion_errors_become_the_python_loops_unmappable_record():
    writer = writer_of(("price", "p", "double"))
    result = assert_same_outcome(writer, {"k": "k", "p": "HL6NEAA="})
    assert result[1:4] == (UnmappableRecord, "t.price <- p: not a decimal number: 'HL6NEAA='", ConversionError)


@pytest.mark.parametrize("row", [{}, {"k": None}, {"k": UNAVAILABLE}, {"k": UNSET_VALUE}, {"k": "k", "j": None},
                                 {"k": "k"}, {"k": "k", "j": 5}])
@pytest.mark.parametrize("null", NULLS)
def test_missing_or_null_key_columns_raise_the_python_loops_message(row, null):
    writer = writer_of(("j", "j", "bigint"), key=("k", "j"))
    assert_same_outcome(writer, row, null)


def test_the_default_mapping_converts_as_the_python_loop_does():
    compiled = compile_mapping(load_mapping(), cql_table_schemas())
    rows = [
        {"symbol": "BTCUSDT", "event_time": UTC_MOMENT, "price_change": Decimal("1234.56000000"),
         "price_change_percent": Decimal("2.9400"), "last_price": Decimal("9999999999999999999999.99999999"),
         "high_price": Decimal("-0.00000001"), "low_price": None, "volume": Decimal("0E-8"),
         "quote_volume": UNAVAILABLE, "trade_count": 1234567, "interval": "1m", "open_time": UTC_MOMENT,
         "close_time": UTC_MOMENT, "open": Decimal("1.5"), "number_of_trades": 7, "side": "bid", "level": 3,
         "price": Decimal("5"), "quantity": Decimal("0.1"), "trade_id": 9, "is_buyer_maker": False},
        {"symbol": "ETHUSDT", "event_time": "2024-01-01T00:00:00Z", "open_time": datetime(2024, 1, 1),
         "interval": "1w", "level": 40000, "trade_count": True},
    ]
    for writer in compiled.writers:
        for row in rows:
            for null in NULLS:
                assert_same_outcome(writer, row, null)


def test_rows_that_are_not_plain_dicts_take_the_python_loop():
    class Row(dict):
        pass

    writer = writer_of(("c", "s", "double"))
    write = writer._upsert(Row(k="k", s=Decimal("0.1")), None, 1, ())
    assert write.values == ["k", 0.1] and write.key == ("k",)


def test_upsert_chooses_the_null_and_returns_a_write():
    writer = writer_of(("c", "s", "double"))
    assert writer.upsert({"k": "k", "s": None}, create=True, timestamp=5, order=(5, 1)) == \
        Write(writer, ("k",), ["k", UNSET_VALUE], 5, (5, 1))
    assert writer.upsert({"k": "k", "s": None}, create=False, timestamp=5, order=(5, 1)).values == ["k", None]


def test_without_the_extension_upsert_is_the_python_loop(monkeypatch):
    monkeypatch.setattr(mapping_writer, "_cql_native", None)
    writer = writer_of(("c", "s", "double"))
    assert writer._upsert == writer.upsert_python
    assert writer.upsert({"k": "k", "s": Decimal("0.1")}, create=True, timestamp=5, order=()).values == ["k", 0.1]


DECIMALS = st.builds(lambda unscaled, scale: Decimal(f"{unscaled}e-{scale}"),
                     st.integers(min_value=-(10**38) + 1, max_value=10**38 - 1), st.integers(min_value=0, max_value=18))
EXPONENT_FORMS = st.builds(lambda unscaled, exponent: Decimal(f"{unscaled}E{exponent:+d}"),
                           st.integers(min_value=-(10**20), max_value=10**20), st.integers(min_value=-40, max_value=40))
SHORT_DECIMALS = st.builds(lambda unscaled, scale: Decimal(unscaled).scaleb(-scale),
                           st.integers(min_value=-(2**53) - 5, max_value=2**53 + 5),
                           st.integers(min_value=-25, max_value=25))
ANY_DECIMAL = st.one_of(DECIMALS, EXPONENT_FORMS, SHORT_DECIMALS,
                        st.decimals(allow_nan=True, allow_infinity=True))
ZONES = st.one_of(st.none(), st.just(UTC),
                  st.timedeltas(min_value=timedelta(hours=-23, minutes=-59),
                                max_value=timedelta(hours=23, minutes=59)).map(timezone))
DECIMAL_WRITER = writer_of(("d", "s", "double"), ("e", "s", "decimal"))
TIME_WRITER = writer_of(("ms", "s", "timestamp"), ("us", "s", "epoch_us"), ("day", "s", "day"),
                        ("month", "s", "month"), ("date", "s", "date"), ("b", ("s", "i"), "kline_bucket"))


@settings(max_examples=400)
@given(ANY_DECIMAL)
def test_decimals_convert_like_the_python_loop(value):
    assert_same_outcome(DECIMAL_WRITER, {"k": "k", "s": value})


@given(SHORT_DECIMALS)
def test_doubles_of_decimals_are_pythons_correctly_rounded_float(value):
    write = DECIMAL_WRITER._upsert({"k": "k", "s": value}, None, 1, ())
    assert same(write.values[1], float(value)) and same(write.values[1], float(str(value)))


@settings(max_examples=300)
@given(st.datetimes(timezones=ZONES), st.sampled_from(["1m", "1h", "2x"]))
def test_datetimes_convert_like_the_python_loop(value, interval):
    assert_same_outcome(TIME_WRITER, {"k": "k", "s": value, "i": interval})


# --------------------------------------------------------------------------------------- binding


class Column:
    def __init__(self, cql_type) -> None:
        self.type = cql_type
        self.keyspace_name, self.table_name, self.name = "ks", "t", "c"


class Prepared:
    """What StatementBinder reads of a prepared statement."""

    def __init__(self, *cql_types) -> None:
        self.protocol_version = PROTOCOL
        self.column_metadata = [Column(t) for t in cql_types]


def serialized(serialize, values):
    try:
        return ("ok", serialize(values))
    except Exception as exc:  # noqa: BLE001 - compared between both paths
        return ("raised", type(exc), str(exc))


def assert_serializes_like_python(binder: StatementBinder, values: list):
    assert binder.serialize != binder.serialize_python  # the C loop is in use
    ours, oracle = serialized(binder.serialize, values), serialized(binder.serialize_python, values)
    assert ours == oracle
    if ours[0] == "ok":
        assert all(type(a) is type(b) for a, b in zip(ours[1], oracle[1]))
    return ours


REVERSED_DOUBLE = cqltypes.lookup_casstype("org.apache.cassandra.db.marshal.ReversedType("
                                           "org.apache.cassandra.db.marshal.DoubleType)")
CQL_TYPES = [cqltypes.DoubleType, cqltypes.FloatType, cqltypes.LongType, cqltypes.CounterColumnType, cqltypes.DateType,
             cqltypes.Int32Type, cqltypes.ShortType, cqltypes.ByteType, cqltypes.BooleanType, cqltypes.UTF8Type,
             cqltypes.VarcharType, cqltypes.AsciiType, cqltypes.DecimalType, cqltypes.SimpleDateType, cqltypes.BytesType,
             cqltypes.UUIDType, cqltypes.IntegerType, REVERSED_DOUBLE]


@pytest.mark.parametrize("cql_type", CQL_TYPES, ids=lambda t: t.typename)
def test_every_column_type_serializes_like_the_python_loop(cql_type):
    binder = StatementBinder(Prepared(cql_type))
    for value in VALUES:
        if cql_type is cqltypes.BytesType and isinstance(value, int) and abs(value) > 1000:
            continue  # the driver would allocate bytes(value): gigabytes of zeros
        result = assert_serializes_like_python(binder, [value])
        if result[0] == "ok" and value is not None and value is not UNSET_VALUE:
            assert result[1] == [cql_type.serialize(value, PROTOCOL)]  # the driver's bytes


def test_a_row_serializes_in_one_call_and_keeps_nulls():
    binder = StatementBinder(Prepared(cqltypes.UTF8Type, cqltypes.DoubleType, cqltypes.DecimalType, cqltypes.DateType,
                                      cqltypes.LongType))
    values = ["BTCUSDT", 0.1, Decimal("1234.56000000"), UNSET_VALUE, None]
    result = assert_serializes_like_python(binder, values)
    assert result[1] == [b"BTCUSDT", struct.pack(">d", 0.1), cqltypes.DecimalType.serialize(values[2], PROTOCOL),
                         UNSET_VALUE, None]
    assert result[1][3] is UNSET_VALUE
    assert assert_serializes_like_python(binder, values[:4]) == \
        ("raised", ValueError, "4 values for 5 bind markers")
    assert assert_serializes_like_python(binder, tuple(values))[0] == "ok"


def test_bind_sets_the_serialized_and_the_raw_values():
    from cassandra.query import PreparedStatement

    prepared = PreparedStatement([Column(cqltypes.UTF8Type), Column(cqltypes.DecimalType)], b"id", [], "INSERT",
                                 "ks", PROTOCOL, [], None)
    values = ["x", Decimal("1E+3")]
    bound = StatementBinder(prepared).bind(values)
    assert bound.raw_values is values
    assert bound.values == [b"x", b"\xff\xff\xff\xfd\x01"]


def test_without_the_extension_serialize_is_the_python_loop(monkeypatch):
    monkeypatch.setattr(cql_values, "_cql_native", None)
    binder = StatementBinder(Prepared(cqltypes.DecimalType))
    assert binder.serialize == binder.serialize_python
    assert binder.serialize([Decimal("-1")]) == [b"\x00\x00\x00\x00\xff"]


@settings(max_examples=400)
@given(ANY_DECIMAL)
def test_decimals_serialize_like_the_python_loop_and_the_driver(value):
    result = assert_serializes_like_python(StatementBinder(Prepared(cqltypes.DecimalType)), [value])
    if result[0] == "ok":
        assert result[1] == [cqltypes.DecimalType.serialize(value, PROTOCOL)]


@given(st.dates())
def test_dates_serialize_like_the_driver(value):
    result = assert_serializes_like_python(StatementBinder(Prepared(cqltypes.SimpleDateType)), [value])
    assert result[1] == [cqltypes.SimpleDateType.serialize(value, PROTOCOL)]


@settings(deadline=None)
@given(st.one_of(st.floats(), st.integers(min_value=-(2**64), max_value=2**64), st.booleans(), st.text()))
def test_scalars_serialize_like_the_python_loop(value):
    binder = StatementBinder(Prepared(*CQL_TYPES))
    for i, cql_type in enumerate(CQL_TYPES):
        if cql_type is cqltypes.BytesType and isinstance(value, int) and abs(value) > 1000:
            continue  # the driver would allocate bytes(value)
        values = [None] * len(CQL_TYPES)
        values[i] = value
        assert_serializes_like_python(binder, values)
