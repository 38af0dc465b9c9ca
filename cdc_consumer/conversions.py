"""Value conversions named in the mapping YAML: decoded PostgreSQL values -> values the Cassandra driver binds.

Each conversion checks the Python type it receives, so a wrong mapping or an unexpected value fails the
record (-> DLQ) with a clear reason instead of reaching Cassandra. `None` (SQL NULL) converts to `None`.
Timestamps are bound as exact integer epoch milliseconds (the driver's own datetime path goes through a
float and truncates toward zero before 1970).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from cdc_consumer.errors import ConversionError

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_US = timedelta(microseconds=1)
_INT_RANGES = {"smallint": 16, "int": 32, "bigint": 64}


@dataclass(frozen=True)
class Conversion:
    name: str
    arity: int  # number of source columns it reads
    cql_types: frozenset[str]  # Cassandra column types it can feed
    convert: Callable[..., Any]


def _type_error(expected: str, value: Any) -> ConversionError:
    return ConversionError(f"expected {expected}, got {type(value).__name__} {value!r:.80}")


def _utc(value: Any) -> datetime:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError as exc:
            raise ConversionError(f"not an ISO-8601 timestamp: {value!r:.80}") from exc
    if not isinstance(value, datetime):
        raise _type_error("a timestamp", value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def to_text(value: Any) -> str:
    if not isinstance(value, str):
        raise _type_error("text", value)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate from a JSON escape: not storable text
        raise ConversionError(f"text is not valid Unicode: {exc.reason}") from exc
    return value


def _integer(kind: str) -> Callable[[Any], int]:
    bits = _INT_RANGES[kind]
    low, high = -(1 << (bits - 1)), (1 << (bits - 1)) - 1

    def convert(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _type_error(kind, value)
        if not low <= value <= high:
            raise ConversionError(f"{value} is out of range for {kind}")
        return value

    return convert


def to_boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _type_error("boolean", value)
    return value


def to_decimal(value: Any) -> Decimal:
    """Exact decimal. Floats are refused: they mean the connector runs decimal.handling.mode=double."""
    if type(value) is Decimal and value.is_finite():  # the usual case, first
        return value
    if isinstance(value, (bool, float)):
        raise _type_error("an exact decimal", value)
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, str):
        value = _decimal_from_text(value)
    if not isinstance(value, Decimal):
        raise _type_error("a decimal", value)
    if not value.is_finite():
        raise ConversionError(f"{value} is not a finite decimal")
    return value


# A text decimal (a source text column mapped to a decimal) as exact as a PostgreSQL numeric can be: at most
# 131072 digits before the point and 16383 after it, so neither the value nor its CQL form grows further.
_MAX_DECIMAL_TEXT = 131072 + 16383 + 16
_DECIMAL_EXPONENTS = range(-16383, 131072)


def _decimal_from_text(text: str) -> Decimal:
    if len(text) > _MAX_DECIMAL_TEXT:
        raise ConversionError(f"a decimal text of {len(text)} characters: longer than a PostgreSQL numeric")
    try:
        value = Decimal(text)
    except InvalidOperation as exc:
        raise ConversionError(f"not a decimal number: {text!r:.80}") from exc
    if value.is_finite() and value.as_tuple().exponent not in _DECIMAL_EXPONENTS:
        raise ConversionError(f"{text!r:.80} has an exponent beyond a PostgreSQL numeric's")
    return value


def to_double(value: Any) -> float:
    """Correctly rounded double of an exact value (chart columns only)."""
    if type(value) is Decimal or isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        value = to_decimal(value)
    if isinstance(value, bool) or not isinstance(value, (Decimal, int)):
        raise _type_error("a number", value)
    return float(value)


def to_timestamp_ms(value: Any) -> int:
    return (_utc(value) - EPOCH) // _MS


def to_epoch_us(value: Any) -> int:
    return (_utc(value) - EPOCH) // _US


def to_date(value: Any) -> date:
    if isinstance(value, datetime):
        return _utc(value).astimezone(UTC).date()
    if not isinstance(value, date):
        raise _type_error("a date", value)
    return value


def to_day(value: Any) -> date:
    """UTC day of a timestamp: the bucket of day-partitioned tables."""
    return _utc(value).astimezone(UTC).date()


def to_month(value: Any) -> date:
    """First day of the UTC month of a timestamp."""
    return to_day(value).replace(day=1)


# Binance kline intervals; sub-hour ones are bucketed by day, the rest by month (_cql_native reads both sets).
SUB_HOUR_INTERVALS = frozenset({"1s", "1m", "3m", "5m", "15m", "30m"})
HOUR_OR_LONGER_INTERVALS = frozenset({"1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w", "1M"})


def to_kline_bucket(open_time: Any, interval: Any) -> date:
    """Partition bucket of a kline: its UTC day for sub-hour intervals, its UTC month otherwise."""
    if interval in SUB_HOUR_INTERVALS:
        return to_day(open_time)
    if interval in HOUR_OR_LONGER_INTERVALS:
        return to_month(open_time)
    raise ConversionError(f"unknown kline interval {interval!r:.40}")


def to_blob(value: Any) -> bytes:
    if not isinstance(value, (bytes, bytearray)):
        raise _type_error("bytes", value)
    return bytes(value)


def to_uuid(value: Any) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(to_text(value))
    except ValueError as exc:
        raise ConversionError(f"not a UUID: {value!r:.80}") from exc


def _conversion(name: str, convert: Callable[..., Any], *cql_types: str, arity: int = 1) -> Conversion:
    return Conversion(name, arity, frozenset(cql_types), convert)


CONVERSIONS: dict[str, Conversion] = {c.name: c for c in (
    _conversion("text", to_text, "text", "varchar", "ascii"),
    _conversion("smallint", _integer("smallint"), "smallint"),
    _conversion("int", _integer("int"), "int"),
    _conversion("bigint", _integer("bigint"), "bigint"),
    _conversion("boolean", to_boolean, "boolean"),
    _conversion("decimal", to_decimal, "decimal"),
    _conversion("double", to_double, "double"),
    _conversion("timestamp", to_timestamp_ms, "timestamp"),
    _conversion("epoch_us", to_epoch_us, "bigint"),
    _conversion("date", to_date, "date"),
    _conversion("day", to_day, "date"),
    _conversion("month", to_month, "date"),
    _conversion("kline_bucket", to_kline_bucket, "date", arity=2),
    _conversion("blob", to_blob, "blob"),
    _conversion("uuid", to_uuid, "uuid"),
)}

# The conversion used when a mapping column names no `convert`: the one feeding its CQL type as-is.
DEFAULT_FOR_CQL_TYPE: dict[str, str] = {
    "text": "text", "varchar": "text", "ascii": "text", "smallint": "smallint", "int": "int",
    "bigint": "bigint", "boolean": "boolean", "decimal": "decimal", "double": "double",
    "timestamp": "timestamp", "date": "date", "blob": "blob", "uuid": "uuid",
}
