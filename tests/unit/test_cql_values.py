"""The consumer's column serializers produce exactly the driver's bytes."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from cassandra import cqltypes
from hypothesis import given
from hypothesis import strategies as st

from cdc_consumer.cql_values import _for_column, serialize_date, serialize_decimal

PROTOCOL = 5


@given(st.integers(min_value=-(10**38) + 1, max_value=10**38 - 1), st.integers(min_value=0, max_value=18))
def test_decimals_serialize_like_the_driver_at_any_precision(unscaled, scale):
    value = Decimal(f"{unscaled}e-{scale}")
    assert serialize_decimal(value) == cqltypes.DecimalType.serialize(value, PROTOCOL)


@pytest.mark.parametrize("text", ["0", "0E-8", "-0.00000001", "-128", "128", "255", "-129", "1E+3", "-5E+2",
                                  "9999999999999999999999.99999999", "12345678901234567890123456789012345678"])
def test_decimal_edge_cases_serialize_like_the_driver(text):
    assert serialize_decimal(Decimal(text)) == cqltypes.DecimalType.serialize(Decimal(text), PROTOCOL)


@pytest.mark.parametrize("day", [date(1970, 1, 1), date(1969, 12, 31), date(2024, 2, 29), date(1, 1, 1),
                                 date(9999, 12, 31)])
def test_dates_serialize_like_the_driver(day):
    assert serialize_date(day) == cqltypes.SimpleDateType.serialize(day, PROTOCOL)


@pytest.mark.parametrize(("cql_type", "value"), [
    (cqltypes.DoubleType, -1e-8), (cqltypes.DoubleType, 1e22), (cqltypes.LongType, -(2**63)),
    (cqltypes.Int32Type, 2**31 - 1), (cqltypes.ShortType, -5), (cqltypes.BooleanType, True),
    (cqltypes.BooleanType, False), (cqltypes.UTF8Type, "Ünïcödé ✓ 🚀"), (cqltypes.VarcharType, ""),
    (cqltypes.DateType, 1_704_067_200_123), (cqltypes.DateType, -1), (cqltypes.BytesType, b"\xde\xad"),
])
def test_fast_paths_serialize_like_the_driver(cql_type, value):
    assert _for_column(cql_type, PROTOCOL)(value) == cql_type.serialize(value, PROTOCOL)


def test_values_of_other_python_types_take_the_drivers_path():
    from datetime import datetime

    serialize = _for_column(cqltypes.DateType, PROTOCOL)
    moment = datetime(2024, 1, 1, 0, 0, 0, 123000)
    assert serialize(moment) == cqltypes.DateType.serialize(moment, PROTOCOL)
    assert _for_column(cqltypes.DoubleType, PROTOCOL)(3) == cqltypes.DoubleType.serialize(3, PROTOCOL)
