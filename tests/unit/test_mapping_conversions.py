"""Conversions named in the mapping: exact where exact, strict about the types they accept."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from cdc_consumer.conversions import CONVERSIONS
from cdc_consumer.errors import ConversionError


def convert(name, *values):
    return CONVERSIONS[name].convert(*values)


def test_timestamps_become_exact_epoch_milliseconds_floored_also_before_1970():
    assert convert("timestamp", datetime(2024, 1, 1, 0, 0, 0, 123999, tzinfo=UTC)) == 1_704_067_200_123
    assert convert("timestamp", datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)) == -1
    assert convert("timestamp", "2024-01-01T00:00:00.000000Z") == 1_704_067_200_000


def test_timestamps_in_other_zones_are_converted_to_utc():
    plus_0530 = timezone(timedelta(hours=5, minutes=30))
    assert convert("day", datetime(2024, 1, 1, 2, 0, tzinfo=plus_0530)) == date(2023, 12, 31)
    assert convert("epoch_us", datetime(2024, 1, 1, 5, 30, 0, 1, tzinfo=plus_0530)) == 1_704_067_200_000_001


def test_month_is_the_first_day_of_the_utc_month():
    assert convert("month", datetime(2024, 2, 29, 23, 59, tzinfo=UTC)) == date(2024, 2, 1)


def test_decimals_stay_exact_and_refuse_floats_and_non_finite_values():
    value = Decimal("12345678901234567890123456789.12345678")
    assert convert("decimal", value) is value
    assert convert("decimal", "-0.00000001") == Decimal("-1E-8")
    with pytest.raises(ConversionError, match="expected an exact decimal, got float"):
        convert("decimal", 1.5)
    with pytest.raises(ConversionError, match="not a finite decimal"):
        convert("decimal", Decimal("NaN"))
    with pytest.raises(ConversionError, match="not a decimal number"):
        convert("decimal", "HL6NEAA=")


def test_doubles_are_the_correctly_rounded_value_of_the_exact_number():
    assert convert("double", Decimal("0.1")) == 0.1
    assert convert("double", Decimal("9999999999999999999999.99999999")) == 1e22
    with pytest.raises(ConversionError):
        convert("double", True)


@pytest.mark.parametrize(("name", "good", "bad"), [
    ("smallint", 32767, 32768), ("int", -2**31, 2**31), ("bigint", 2**63 - 1, 2**63)])
def test_integers_are_range_checked(name, good, bad):
    assert convert(name, good) == good
    with pytest.raises(ConversionError, match=f"out of range for {name}"):
        convert(name, bad)


def test_text_must_be_storable_unicode():
    assert convert("text", "Ünïcödé ✓ 🚀") == "Ünïcödé ✓ 🚀"
    with pytest.raises(ConversionError, match="not valid Unicode"):
        convert("text", "\ud83d")
    with pytest.raises(ConversionError, match="expected text, got int"):
        convert("text", 5)


def test_booleans_are_not_integers():
    with pytest.raises(ConversionError, match="expected bigint, got bool"):
        convert("bigint", True)
    with pytest.raises(ConversionError, match="expected boolean, got int"):
        convert("boolean", 1)
