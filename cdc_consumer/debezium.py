"""Kafka Connect value semantics shared by the JSON and Avro decoders (pure, no I/O): schema -> converters.

Both wire formats carry the same Connect schema: the JSON converter spells it as `{"type", "name",
"parameters"}`, the Avro converter as `connect.name` / `connect.parameters` on Avro types. Each decoder
walks its schema once and asks this module for one converter per field; the converters turn a wire value
(base64 text in JSON, raw bytes in Avro) into the Python value `events.py` documents. `envelope.py`
then turns a converted payload into a `ChangeEvent`; this module knows nothing of envelopes or records.

Decisions:
- An unknown semantic `name` on a known Connect type decodes as that type (Debezium adds names such as
  `io.debezium.data.Xml` that need nothing more). A known name used wrongly — a Decimal without an integer
  `scale`, a Date on a string — is a `SchemaError`.
- Values Python cannot represent exactly are errors, never approximations: a timestamp outside
  datetime's years 1..9999 (PostgreSQL allows 4713 BC .. 294276 AD and `infinity`), `time` 24:00:00,
  and sub-microsecond digits of Nano* types raise `InvalidValue`, so the record goes to the DLQ.
- Nothing beyond what PostgreSQL can hold is accepted, so no output grows with a number the record chose: a
  Decimal's scale must be within numeric(p, s)'s -1000..1000 and its precision 1..1000, a
  VariableScaleDecimal's scale within 0..16383 (the most digits an unconstrained numeric keeps after the
  point); anything else is `InvalidValue`.
- Plain fields are checked against their Connect type, never converted: an int64 holds a Python int within
  64 bits (not a bool, a float or a string), a string a str, a boolean a bool (JSON; Avro's wire types
  already guarantee it, but for int8/int16 the range).
- `io.debezium.data.Json` stays the JSON text (exact; json keeps its whitespace); `Bits` becomes the
  int whose binary digits are the bit string; `MicroDuration` a timedelta of its microseconds.
"""

from __future__ import annotations

import binascii
import enum
import math
import struct
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, Literal, overload

from cdc_consumer.errors import DecodeError, InexactNumber, InvalidValue, SchemaError
from cdc_consumer.events import UNAVAILABLE

Converter = Callable[[Any], Any]

# Containers nested deeper than this are refused (SchemaError): Debezium's envelopes nest three or four deep,
# and a bound keeps the schema walks, the extensions' programs and every payload walk shallow.
MAX_SCHEMA_DEPTH = 32

DECIMAL = "org.apache.kafka.connect.data.Decimal"
VARIABLE_SCALE_DECIMAL = "io.debezium.data.VariableScaleDecimal"


class Wire(enum.Enum):
    """How a converter sees bytes and special doubles: JSON sends base64 text and "NaN"; Avro raw values."""

    JSON = "json"
    AVRO = "avro"


# ---------------------------------------------------------------------------------------- values

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_MICROS_PER_DAY = 86_400_000_000
_SPECIAL_FLOATS = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}
_FLOAT32 = struct.Struct("<f")


# PostgreSQL numeric: a declared numeric(p, s) has 1 <= p <= 1000 and -1000 <= s <= 1000 (Debezium writes it
# as a Connect Decimal of that scale and precision); an unconstrained numeric keeps up to 131072 digits
# before the point and 16383 after it (Debezium: VariableScaleDecimal, scale = the digits after the point).
DECIMAL_SCALES = range(-1000, 1001)
DECIMAL_PRECISIONS = range(1, 1001)
VARIABLE_SCALES = range(0, 16384)
MAX_NUMERIC_DIGITS = 131072 + 16383


def unscaled_bits_bound(digits: int) -> int:
    """Most bits of the magnitude of an integer of `digits` decimal digits: a cheap bound, checked before
    the (quadratic) conversion to digits."""
    return (digits * 3322 + 999) // 1000  # log2(10) < 3.322


_MAX_UNSCALED_BITS = unscaled_bits_bound(MAX_NUMERIC_DIGITS)


def decimal_from_unscaled(unscaled: int, scale: int) -> Decimal:
    """unscaled × 10^-scale, built from its digits: exact at any precision (no context arithmetic)."""
    return Decimal(f"{unscaled}E{-scale}")


def unscaled_from_bytes(raw: bytes) -> int:
    """Connect's Decimal bytes: the big-endian two's-complement unscaled integer."""
    if not raw:
        raise ValueError("empty decimal bytes")
    unscaled = int.from_bytes(raw, "big", signed=True)
    if unscaled.bit_length() > _MAX_UNSCALED_BITS:
        raise ValueError("more unscaled digits than a PostgreSQL numeric holds")
    return unscaled


def _integer_check(connect_type: str) -> Converter:
    """A plain intN field: a Python int (not a bool) within N bits, returned as is."""
    bits = {"int8": 8, "int16": 16, "int32": 32, "int64": 64}[connect_type]
    low, high = -(1 << (bits - 1)), (1 << (bits - 1)) - 1

    def check(value: Any) -> int:
        if value.__class__ is not int:
            raise TypeError(f"{connect_type} expected, got {type(value).__name__}")
        if not low <= value <= high:
            raise ValueError(f"outside {connect_type}")
        return value

    return check


def _exact_type(connect_type: str, cls: type) -> Converter:
    """A plain field whose wire value must be exactly `cls` (str for string, bool for boolean)."""
    def check(value: Any) -> Any:
        if value.__class__ is not cls:
            raise TypeError(f"{connect_type} expected, got {type(value).__name__}")
        return value

    return check


def _whole_number(value: Any) -> int:
    """The epoch count of a temporal int32/int64 field: an int, never a bool, float or string."""
    if value.__class__ is not int:
        raise TypeError(f"an integer count expected, got {type(value).__name__}")
    return value


def bytes_from_base64(text: str) -> bytes:
    """Strict base64: bad padding or a stray character is an error, never silently skipped."""
    return binascii.a2b_base64(text, strict_mode=True)


def _utc_datetime(micros: int) -> datetime:
    if micros.__class__ is not int:
        raise TypeError(f"an integer count expected, got {type(micros).__name__}")
    try:
        return _EPOCH + timedelta(microseconds=micros)
    except OverflowError:
        raise ValueError(f"{micros} µs since epoch is outside datetime's years 1..9999") from None


def _whole_micros(nanos: int) -> int:
    micros, rest = divmod(_whole_number(nanos), 1000)
    if rest:
        raise ValueError(f"{nanos} ns has sub-microsecond digits that datetime cannot hold")
    return micros


def _time_of_day(micros: int) -> time:
    if not 0 <= _whole_number(micros) < _MICROS_PER_DAY:
        raise ValueError(f"{micros} µs is not a datetime.time (00:00 <= t < 24:00)")
    seconds, micro = divmod(micros, 1_000_000)
    minutes, second = divmod(seconds, 60)
    hour, minute = divmod(minutes, 60)
    return time(hour, minute, second, micro)


def _date_from_days(days: int) -> date:
    try:
        return date.fromordinal(_EPOCH_ORDINAL + _whole_number(days))
    except (ValueError, OverflowError):
        raise ValueError(f"{days} days since epoch is outside date's years 1..9999") from None


def _zoned_timestamp(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is UTC:
        return moment
    if moment.tzinfo is None:
        raise ValueError(f"ZonedTimestamp {text!r} has no UTC offset")
    return moment.astimezone(UTC)


def _zoned_time(text: str) -> time:
    moment = time.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError(f"ZonedTime {text!r} has no UTC offset")
    return moment


def json_double(value: Any) -> float:
    """A JSON double: a number, or JsonConverter's "NaN" / "Infinity" / "-Infinity" text."""
    if value.__class__ is float:
        return value
    if value.__class__ is str:
        try:
            return _SPECIAL_FLOATS[value]
        except KeyError:
            raise ValueError(f"{value!r} is not a number") from None
    if value.__class__ is bool:
        raise ValueError(f"{value!r} is not a number")
    return float(value)  # an int, or a Decimal when the record was parsed with exact numbers


def float32_shortest(value: float) -> float:
    """A float32 column's value as the shortest decimal that is the same float32 (what Postgres prints).

    Avro hands over the float32's exact binary value and Jackson prints it with up to 9 digits; both
    normalise to the same Python float here, so the two wire formats decode to identical rows.
    """
    if not math.isfinite(value):
        return value
    try:
        exact = _FLOAT32.unpack(_FLOAT32.pack(value))[0]
    except (struct.error, OverflowError):
        raise ValueError(f"{value!r} is outside float32's range") from None
    for digits in range(1, 10):
        candidate = float(f"{exact:.{digits}g}")
        if _FLOAT32.unpack(_FLOAT32.pack(candidate))[0] == exact:
            return candidate
    return exact


def _json_float32(value: Any) -> float:
    return float32_shortest(json_double(value))


# ------------------------------------------------------------------------- schema parameters

def brief(value: Any, most: int = 40) -> str:
    """repr(value) cut to `most` characters: error messages never repeat a long hostile value."""
    try:
        text = repr(value)
    except ValueError:  # an int beyond Python's digit limit
        text = f"<{type(value).__name__}>"
    return text if len(text) <= most else text[:most - 3] + "..."


@overload
def _int_param(params: Mapping[str, Any], key: str, what: str, *, required: Literal[True]) -> int: ...
@overload
def _int_param(params: Mapping[str, Any], key: str, what: str, *, required: bool) -> int | None: ...
def _int_param(params: Mapping[str, Any], key: str, what: str, *, required: bool) -> int | None:
    raw = params.get(key)
    if raw is None:
        if required:
            raise SchemaError(f"{what} has no '{key}' parameter")
        return None
    try:
        return int(raw)
    except (TypeError, ValueError):
        raise SchemaError(f"{what} has a non-integer '{key}' parameter {brief(raw)}") from None


# ----------------------------------------------------------------------- leaf converters

def decimal_parameters(params: Mapping[str, Any], what: str) -> tuple[int, int | None]:
    """(scale, precision or None) of a Connect Decimal, each within what a PostgreSQL numeric can have."""
    scale = _int_param(params, "scale", what, required=True)
    precision = _int_param(params, "connect.decimal.precision", what, required=False)
    if scale not in DECIMAL_SCALES:
        raise InvalidValue(f"{what}: scale {brief(scale)} is outside PostgreSQL's -1000..1000")
    if precision is not None and precision not in DECIMAL_PRECISIONS:
        raise InvalidValue(f"{what}: precision {brief(precision)} is outside PostgreSQL's 1..1000")
    return scale, precision


def _decimal_converter(params: Mapping[str, Any], wire: Wire, what: str) -> Converter:
    scale, precision = decimal_parameters(params, what)
    exponent = f"E{-scale}"
    # a cheap first bound, loose enough that the exact digit count below names an ordinary overflow
    most_bits = _MAX_UNSCALED_BITS if precision is None else unscaled_bits_bound(2 * precision + 100)
    from_bytes, a2b_base64 = int.from_bytes, binascii.a2b_base64  # hot path: one call per decimal

    def from_raw(raw: bytes) -> Decimal:
        if not raw:
            raise ValueError("empty decimal bytes")
        unscaled = from_bytes(raw, "big", signed=True)
        if unscaled.bit_length() > most_bits:
            raise ValueError("more digits than the decimal's precision")
        digits = str(unscaled)
        if precision is not None and len(digits) - (digits[0] == "-") > precision:
            raise ValueError(f"{digits} has more than {precision} digits")
        return Decimal(digits + exponent)

    if wire is Wire.AVRO:
        return from_raw

    def from_json(value: Any) -> Decimal:
        if value.__class__ is str:
            return from_raw(a2b_base64(value, strict_mode=True))
        return _decimal_from_number(value, scale)

    return from_json


def _decimal_from_number(value: Any, scale: int) -> Decimal:
    """A Decimal sent as a JSON number (JsonConverter decimal.format=NUMERIC), given its schema scale."""
    if value.__class__ is float:
        raise InexactNumber()
    if value.__class__ is bool or not isinstance(value, (int, Decimal)):
        raise TypeError(f"{value!r} is neither base64 nor a number")
    sign, digits, exponent = Decimal(value).as_tuple()
    if not isinstance(exponent, int):  # 'n', 'N' or 'F': NaN, sNaN, Infinity
        raise ValueError(f"{value!r} is not a finite decimal")
    if exponent < -scale:
        raise ValueError(f"{value} has more than {scale} decimal places")
    return Decimal((sign, digits + (0,) * (exponent + scale), -scale))


def _variable_scale_decimal(wire: Wire) -> Converter:
    to_bytes = bytes_from_base64 if wire is Wire.JSON else bytes

    def convert(value: Mapping[str, Any]) -> Decimal:
        scale = value["scale"]
        if scale.__class__ is not int:
            raise ValueError(f"scale {brief(scale)} is not an integer")
        if scale not in VARIABLE_SCALES:
            raise ValueError(f"scale {brief(scale)} is outside PostgreSQL's 0..16383")
        return decimal_from_unscaled(unscaled_from_bytes(to_bytes(value["value"])), scale)

    return convert


def _json_bytes(wire: Wire) -> Converter | None:
    return bytes_from_base64 if wire is Wire.JSON else None


def _compose(first: Converter | None, then: Converter) -> Converter:
    if first is None:
        return then
    return lambda value: then(first(value))


def _bits(wire: Wire) -> Converter:
    """io.debezium.data.Bits: little-endian bytes; the int's binary digits are the bit string."""
    return _compose(_json_bytes(wire), lambda raw: int.from_bytes(raw, "little"))


def _millis_timestamp(ms: int) -> datetime:
    return _utc_datetime(_whole_number(ms) * 1000)


def _millis_time(ms: int) -> time:
    return _time_of_day(_whole_number(ms) * 1000)


# Semantic name -> (the Connect type it sits on, converter of the wire value; None: the value is right as is)
_SEMANTIC_VALUES: dict[str, tuple[str, Converter | None]] = {
    "io.debezium.time.ZonedTimestamp": ("string", _zoned_timestamp),
    "io.debezium.time.ZonedTime": ("string", _zoned_time),
    "io.debezium.time.Timestamp": ("int64", _millis_timestamp),
    "io.debezium.time.MicroTimestamp": ("int64", _utc_datetime),
    "io.debezium.time.NanoTimestamp": ("int64", lambda ns: _utc_datetime(_whole_micros(ns))),
    "org.apache.kafka.connect.data.Timestamp": ("int64", _millis_timestamp),
    "io.debezium.time.Date": ("int32", _date_from_days),
    "org.apache.kafka.connect.data.Date": ("int32", _date_from_days),
    "io.debezium.time.Time": ("int32", _millis_time),
    "org.apache.kafka.connect.data.Time": ("int32", _millis_time),
    "io.debezium.time.MicroTime": ("int64", _time_of_day),
    "io.debezium.time.NanoTime": ("int64", lambda ns: _time_of_day(_whole_micros(ns))),
    "io.debezium.time.MicroDuration": ("int64", lambda micros: timedelta(microseconds=_whole_number(micros))),
    "io.debezium.data.Json": ("string", None),  # the JSON text itself: exact, whitespace kept
    "io.debezium.data.Enum": ("string", None),  # (None: the plain type's check, see leaf_converter)
    "io.debezium.data.EnumSet": ("string", None),
    "io.debezium.data.Uuid": ("string", uuid.UUID),
}
# Semantic name -> (Connect type, factory(schema parameters, wire, field description) -> converter):
# the converters that depend on the schema's parameters or on how the wire format sends bytes
_SEMANTIC_FACTORIES: dict[str, tuple[str, Callable[[Mapping[str, Any], Wire, str], Converter | None]]] = {
    DECIMAL: ("bytes", _decimal_converter),
    VARIABLE_SCALE_DECIMAL: ("struct", lambda params, wire, what: _variable_scale_decimal(wire)),
    "io.debezium.data.Bits": ("bytes", lambda params, wire, what: _bits(wire)),
}

# The checks of plain fields (one instance each: decoder.py describes them to the C extension by identity)
PLAIN_CHECKS: dict[str, Converter] = {connect_type: _integer_check(connect_type)
                                      for connect_type in ("int8", "int16", "int32", "int64")}
PLAIN_CHECKS["string"] = _exact_type("string", str)
PLAIN_CHECKS["boolean"] = _exact_type("boolean", bool)


def _plain(connect_type: str, *, avro_checks: bool = False) -> Callable[[Wire], Converter | None]:
    """JSON values are checked against their type; Avro's wire types hold it already (but int8/int16 sit on
    an Avro int, so their range is checked)."""
    check = PLAIN_CHECKS[connect_type]
    return lambda wire: check if wire is Wire.JSON or avro_checks else None


# Connect primitive type (as JsonConverter spells it: "float" is float32, "double" float64) -> converter
# of its wire value, or None when the wire value is already right
_PRIMITIVES: dict[str, Callable[[Wire], Converter | None]] = {
    "int8": _plain("int8", avro_checks=True), "int16": _plain("int16", avro_checks=True),
    "int32": _plain("int32"), "int64": _plain("int64"), "boolean": _plain("boolean"), "string": _plain("string"),
    "double": lambda wire: json_double if wire is Wire.JSON else None,
    "float": lambda wire: _json_float32 if wire is Wire.JSON else float32_shortest,
    "bytes": _json_bytes,
}


def leaf_converter(connect_type: str, name: str | None, params: Mapping[str, Any] | None, wire: Wire,
                   what: str) -> Converter | None:
    """The converter for a non-container Connect field (VariableScaleDecimal counts as a leaf).

    `what` names the field for error messages. Returns None when the wire value needs no change.
    """
    if connect_type.__class__ is not str or not (name is None or name.__class__ is str):
        raise SchemaError(f"{what}: type {brief(connect_type)} and name {brief(name)} must be strings")
    if params is not None and not isinstance(params, Mapping):
        raise SchemaError(f"{what}: parameters {brief(params)} must be a mapping")
    primitive = _PRIMITIVES.get(connect_type)
    if name in _SEMANTIC_VALUES or name in _SEMANTIC_FACTORIES:
        expected, make = _SEMANTIC_FACTORIES.get(name) or _constant_factory(*_SEMANTIC_VALUES[name])
        if connect_type != expected:
            raise SchemaError(f"{what}: {name} on a {connect_type[:40]} field (expected {expected})")
        convert = make(params or {}, wire, f"{what}: {name}")
        return convert if convert is not None or primitive is None else primitive(wire)
    if primitive is None:
        raise SchemaError(f"{what}: unknown Connect type {brief(connect_type)}")
    return primitive(wire)


def _constant_factory(connect_type: str, convert: Converter | None):
    return connect_type, lambda params, wire, what: convert


def is_semantic_struct(name: Any) -> bool:
    """A struct that decodes to one value (VariableScaleDecimal) rather than to a dict."""
    return name.__class__ is str and name in _SEMANTIC_FACTORIES and _SEMANTIC_FACTORIES[name][0] == "struct"


# ------------------------------------------------------------------ containers and structs

def array_converter(element: Converter | None) -> Converter | None:
    if element is None:
        return None
    return lambda items: [None if item is None else element(item) for item in items]


def map_converter(key: Converter | None, value: Converter | None) -> Converter | None:
    """Connect maps: JSON sends string-keyed maps as objects and others as [[k, v], ...] pairs."""
    if key is None and value is None:
        return lambda entries: dict(entries) if isinstance(entries, list) else entries

    def convert_key(k):
        return k if key is None or k is None else key(k)

    def convert_value(v):
        return v if value is None or v is None else value(v)

    def convert(entries):
        pairs = entries.items() if isinstance(entries, dict) else entries
        return {convert_key(k): convert_value(v) for k, v in pairs}

    return convert


def placeholder_form(connect_type: str, wire: Wire, text: str) -> Any:
    """How Debezium's unavailable-value placeholder looks on the wire in a field of this type."""
    if connect_type == "bytes":
        return binascii.b2a_base64(text.encode(), newline=False).decode() if wire is Wire.JSON else text.encode()
    if connect_type == "array":
        return [text]
    return text


class StructConverter:
    """Decodes one struct (row) dict in place: compiled once per schema, called once per record."""

    __slots__ = ("_convert", "_converters", "_describe", "_fields", "_forms", "_placeholders")

    def __init__(self, fields: Iterable[tuple[str, Converter | None, str, Any]]) -> None:
        """fields: (name, converter or None, description for errors, the placeholder's wire form)."""
        fields = list(fields)
        self._fields = tuple(name for name, *_ in fields)
        self._converters = {name: conv for name, conv, _, _ in fields}
        self._convert = tuple((name, conv) for name, conv in self._converters.items() if conv is not None)
        self._describe = {name: describe for name, _, describe, _ in fields}
        self._placeholders = {name: form for name, _, _, form in fields}
        forms: list[Any] = []
        for form in self._placeholders.values():
            if form not in forms:
                forms.append(form)
        self._forms = tuple(forms)

    def field_converter(self, name: str) -> Converter | None:
        """The compiled converter of one field (e.g. the envelope's `after`)."""
        return self._converters.get(name)

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        if row.__class__ is not dict:
            raise InvalidValue(f"expected a struct, got {row!r:.80}")
        convert = self._convert
        if self._may_hold_placeholder(row):
            unavailable = self._mark_unavailable(row)
            convert = tuple(item for item in convert if item[0] not in unavailable)
        name = ""
        try:
            for name, conv in convert:
                value = row[name]
                if value is not None:
                    row[name] = conv(value)
        except (ValueError, TypeError, KeyError, OverflowError, ArithmeticError, AttributeError) as exc:
            raise self._field_error(name, row, exc) from None
        except DecodeError as exc:  # from a nested struct: prefix this level's field name
            raise type(exc)(f"{name}.{exc.reason}") from None
        return row

    def _may_hold_placeholder(self, row: dict[str, Any]) -> bool:
        values = row.values()
        for form in self._forms:  # one C-level scan per distinct form; a hit takes the slow path
            if form in values:
                return True
        return False

    def _mark_unavailable(self, row: dict[str, Any]) -> set[str]:
        """Replace unchanged-TOAST placeholders by UNAVAILABLE (by each field's own wire form)."""
        names = {name for name in self._fields if name in row and row[name] == self._placeholders[name]}
        for name in names:
            row[name] = UNAVAILABLE
        return names

    def _field_error(self, name: str, row: dict[str, Any], exc: BaseException) -> InvalidValue:
        if name not in row:
            return InvalidValue(f"{name}: missing from the payload")
        detail = str(exc) or type(exc).__name__
        return InvalidValue(f"{name}: cannot decode {row[name]!r:.80} as {self._describe[name]}: {detail}")
