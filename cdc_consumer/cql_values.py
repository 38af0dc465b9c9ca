"""Fast binding of prepared-statement values: per-column serializers compiled once per statement.

The driver's `BoundStatement.bind` serializes every value through generic per-column code (a ColDesc
tuple, an encryption-policy check, type dispatch, a pure-Python varint for decimals): about half of the
consumer's CPU per event. The writer binds ~30 columns per row at tens of thousands of rows per second,
so each column gets a serializer chosen once from the statement's metadata; types without a fast path
use the driver's own serializer. The bytes are identical to the driver's (tests/unit/test_cql_values.py).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from datetime import date
from decimal import Decimal
from typing import Any

from cassandra.query import UNSET_VALUE, BoundStatement

try:  # the C loop of StatementBinder.bind (setup.py builds it; without a compiler the Python loop runs)
    import cdc_consumer._cql_native as _cql_native
except ImportError:  # pragma: no cover - depends on the build
    _cql_native = None

_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_INT32 = struct.Struct(">i").pack
_DATE_CENTER = 1 << 31  # CQL date: unsigned days with the epoch at 2^31


def _varint(number: int) -> bytes:
    """Minimal big-endian two's complement, like java.math.BigInteger.toByteArray."""
    magnitude = number if number >= 0 else ~number
    return number.to_bytes(magnitude.bit_length() // 8 + 1, "big", signed=True)


_MAX_FIXED_POINT_SCALE = 1000  # PostgreSQL's largest numeric scale


def serialize_decimal(value: Decimal) -> bytes:
    """CQL decimal: int32 scale + varint unscaled value, without the default 28-digit context."""
    sign, digits, exponent = value.as_tuple()
    if not isinstance(exponent, int):  # 'n', 'N' or 'F': NaN, sNaN, Infinity
        raise ValueError(f"a CQL decimal cannot hold {value}")
    # e.g. Decimal("1E+3"): keep the driver's negative-scale representation; and a scale beyond any numeric's
    # (1E-2147483647) is read from the digits, as the driver and _cql_native do, not from gigabytes of zeros
    if not -_MAX_FIXED_POINT_SCALE <= exponent <= 0:
        unscaled = int("".join(map(str, digits))) * (-1 if sign else 1)
        return _INT32(-exponent) + _varint(unscaled)
    text = format(value, "f")  # exact fixed-point text, e.g. "-0.00000001"
    point = text.find(".")
    if point >= 0:
        return _INT32(len(text) - point - 1) + _varint(int(text[:point] + text[point + 1:]))
    return _INT32(0) + _varint(int(text))


def serialize_date(value: date) -> bytes:
    return struct.pack(">I", value.toordinal() - _EPOCH_ORDINAL + _DATE_CENTER)


def _bool(value: bool) -> bytes:
    return b"\x01" if value else b"\x00"


def _text(value: str) -> bytes:
    return value.encode("utf-8")


_FAST: dict[str, Callable[[Any], bytes]] = {
    "double": struct.Struct(">d").pack,
    "float": struct.Struct(">f").pack,
    "bigint": struct.Struct(">q").pack,
    "counter": struct.Struct(">q").pack,
    "timestamp": struct.Struct(">q").pack,  # only for int epoch milliseconds (see _for_column)
    "int": struct.Struct(">i").pack,
    "smallint": struct.Struct(">h").pack,
    "tinyint": struct.Struct(">b").pack,
    "boolean": _bool,
    "text": _text,
    "varchar": _text,
    "decimal": serialize_decimal,
    "date": serialize_date,
    "blob": bytes,
}
# The exact Python types each fast path takes (bool is an int and datetime a date: both excluded).
_FAST_TYPES: dict[str, tuple[type, ...]] = {
    "double": (float,), "float": (float,), "bigint": (int,), "counter": (int,), "timestamp": (int,),
    "int": (int,), "smallint": (int,), "tinyint": (int,), "boolean": (bool,), "text": (str,), "varchar": (str,),
    "decimal": (Decimal,), "date": (date,), "blob": (bytes, bytearray),
}


def _unreversed(cql_type):
    while cql_type.typename == "org.apache.cassandra.db.marshal.ReversedType":
        cql_type = cql_type.subtypes[0]
    return cql_type


def _for_column(cql_type, protocol_version: int) -> Callable[[Any], bytes]:
    cql_type = _unreversed(cql_type)
    fast, expected = _FAST.get(cql_type.typename), _FAST_TYPES.get(cql_type.typename)
    generic = cql_type.serialize

    if fast is None:
        return lambda value: generic(value, protocol_version)

    fast_types = expected or ()

    def serialize(value: Any) -> bytes:
        return fast(value) if type(value) in fast_types else generic(value, protocol_version)

    return serialize


class StatementBinder:
    """Binds value sequences to one prepared statement through its compiled column serializers."""

    def __init__(self, prepared) -> None:
        self.prepared = prepared
        version = prepared.protocol_version
        self.serializers = tuple(_for_column(c.type, version) for c in prepared.column_metadata)
        self.serialize = native_serializer(prepared.column_metadata, self.serializers) \
            if _cql_native is not None else self.serialize_python

    def bind(self, values: Sequence[Any]) -> BoundStatement:
        serialized = self.serialize(values)
        bound = BoundStatement(self.prepared)
        bound.raw_values = values
        bound.values = serialized
        return bound

    def serialize_python(self, values: Sequence[Any]) -> list:
        """The serialized values (None and UNSET_VALUE kept): the path without the C extension, and the
        oracle its tests compare with."""
        if len(values) != len(self.serializers):
            raise ValueError(f"{len(values)} values for {len(self.serializers)} bind markers")
        return [value if value is None or value is UNSET_VALUE else serialize(value)
                for serialize, value in zip(self.serializers, values)]


def native_serializer(column_metadata, serializers: tuple[Callable[[Any], bytes], ...]):
    """The C loop of StatementBinder.serialize_python: a native kind for each column type of _FAST (used
    only for the exact Python types of _FAST_TYPES), the column's Python serializer for everything else."""
    kinds = _cql_native.SERIALIZER_KINDS
    return _cql_native.Serializer(tuple(kinds.get(_unreversed(c.type).typename, 0) for c in column_metadata),
                                  serializers)
