"""Debezium change events written by Confluent's AvroConverter -> `ChangeEvent` (pure: no I/O here).

Bytes are in Confluent's wire format (`ConfluentWireFormat`): magic byte 0 + 4-byte big-endian schema id,
or magic 1 + a 16-byte schema GUID, then the Avro binary body. Schemas come from a `SchemaSource`
(`schema_registry.py` has the HTTP client and a file-backed one). Each schema is compiled once: fastavro
parses it for `schemaless_reader`, and the same Connect semantics as the JSON path (`debezium.py`) are
applied by each field's `connect.name`. fastavro's own logical types are switched off (the `logicalType`
keys are dropped before parsing) so every Decimal goes through the one exact converter.
"""

from __future__ import annotations

import io
import struct
import uuid
from collections.abc import Mapping
from typing import Any, Protocol

import fastavro

from cdc_consumer.debezium import (
    DECIMAL,
    ChangeDecoder,
    Converter,
    EnvelopeCodec,
    InvalidValue,
    SchemaError,
    StructConverter,
    Wire,
    array_converter,
    is_semantic_struct,
    leaf_converter,
    map_converter,
    placeholder_form,
)
from cdc_consumer.decoder import Decoder
from cdc_consumer.events import UNAVAILABLE, ChangeEvent, DecodeError

__all__ = ["AvroDecoder", "ConfluentWireFormat", "InvalidAvro", "RegistryUnavailable", "SchemaRef",
           "SchemaSource", "UnknownSchemaId", "WireFormatError", "compile_avro_schema"]

SchemaRef = int | uuid.UUID  # a schema id (magic 0) or GUID (magic 1)


class WireFormatError(DecodeError):
    """The bytes are not in Confluent's wire format (wrong magic byte, too short)."""


class InvalidAvro(DecodeError):
    """The Avro body does not match the schema its header names."""


class UnknownSchemaId(DecodeError):
    """The schema registry (or schemas file) has no schema with this id or GUID."""


class RegistryUnavailable(DecodeError):
    """The schema registry could not be asked (connection refused, timeout, HTTP 5xx, bad answer)."""


class SchemaSource(Protocol):
    """Where Avro schemas come from: `schema(ref)` returns the parsed writer schema, or raises
    UnknownSchemaId / RegistryUnavailable."""

    def schema(self, ref: SchemaRef) -> Any: ...


class ConfluentWireFormat:
    """Confluent's framing of a serialized record, as in confluent-kafka's `SchemaId.from_bytes`."""

    MAGIC_ID = 0
    MAGIC_GUID = 1
    _ID = struct.Struct(">I")

    @classmethod
    def split(cls, data: bytes) -> tuple[SchemaRef, memoryview]:
        """(schema id or GUID, Avro body) of one serialized record."""
        if not data:
            raise WireFormatError("empty record: expected a magic byte and a schema id")
        magic = data[0]
        if magic == cls.MAGIC_ID:
            if len(data) < 5:
                raise WireFormatError(f"{len(data)} bytes: too short for magic byte + 4-byte schema id")
            return cls._ID.unpack_from(data, 1)[0], memoryview(data)[5:]
        if magic == cls.MAGIC_GUID:
            if len(data) < 17:
                raise WireFormatError(f"{len(data)} bytes: too short for magic byte + 16-byte schema GUID")
            return uuid.UUID(bytes=bytes(data[1:17])), memoryview(data)[17:]
        raise WireFormatError(f"unknown magic byte {magic:#04x} (expected 0x00 or 0x01)")


# Avro type -> Connect type (int16/int8 come as `connect.type` on an int)
_AVRO_PRIMITIVES = {"int": "int32", "long": "int64", "float": "float", "double": "double",
                    "boolean": "boolean", "string": "string", "bytes": "bytes", "fixed": "bytes",
                    "enum": "string"}
# Avro logical types from writers that are not Connect, mapped to the Connect equivalent
_LOGICAL_TYPES = {"date": "org.apache.kafka.connect.data.Date", "time-millis": "org.apache.kafka.connect.data.Time",
                  "time-micros": "io.debezium.time.MicroTime",
                  "timestamp-millis": "org.apache.kafka.connect.data.Timestamp",
                  "timestamp-micros": "io.debezium.time.MicroTimestamp", "uuid": "io.debezium.data.Uuid",
                  "decimal": DECIMAL}


def compile_avro_schema(schema: Any, *, placeholder: str = UNAVAILABLE.TEXT) -> Converter | None:
    """Walk an Avro schema written by Connect once; returns the converter of a value read by fastavro."""
    return _AvroCompiler(placeholder).compile(schema, "", "value")


class _AvroCompiler:
    def __init__(self, placeholder: str) -> None:
        self._placeholder = placeholder
        self._named: dict[str, Converter | None] = {}

    def compile(self, schema: Any, namespace: str, what: str) -> Converter | None:
        if isinstance(schema, str):
            return self._reference(schema, namespace, what)
        if isinstance(schema, list):
            return self._union(schema, namespace, what)
        if not isinstance(schema, dict) or "type" not in schema:
            raise SchemaError(f"{what}: not an Avro schema: {schema!r:.80}")
        kind = schema["type"]
        if kind == "record" or kind == "error":
            return self._record(schema, namespace, what)
        if kind == "array":
            return array_converter(self.compile(schema.get("items"), namespace, f"{what}[]"))
        if kind == "map":
            return map_converter(None, self.compile(schema.get("values"), namespace, f"{what}{{}}"))
        if isinstance(kind, (dict, list)):  # {"type": {...}} wraps another schema
            return self.compile(kind, namespace, what)
        convert = self._leaf(schema, kind, what)
        if kind in ("enum", "fixed"):
            self._named[_full_name(schema, namespace)] = convert
        return convert

    def _reference(self, name: str, namespace: str, what: str) -> Converter | None:
        if name in _AVRO_PRIMITIVES:
            return self._leaf({}, name, what)
        if name == "null":
            return None
        for candidate in (f"{namespace}.{name}" if namespace and "." not in name else name, name):
            if candidate in self._named:
                return self._named[candidate]
        raise SchemaError(f"{what}: unknown Avro type {name!r}")

    def _union(self, branches: list[Any], namespace: str, what: str) -> Converter | None:
        converters = [self.compile(b, namespace, what) for b in branches if b != "null"]
        if len(converters) == 1:
            return converters[0]
        if any(c is not None for c in converters):
            raise SchemaError(f"{what}: unions of several non-null types are not Connect schemas")
        return None

    def _leaf(self, schema: Mapping[str, Any], kind: str, what: str) -> Converter | None:
        connect_type = schema.get("connect.type") or _AVRO_PRIMITIVES.get(kind)
        if connect_type is None:
            raise SchemaError(f"{what}: unknown Avro type {kind!r}")
        name = schema.get("connect.name")
        params = schema.get("connect.parameters")
        logical = schema.get("logicalType")
        if name is None and logical in _LOGICAL_TYPES:
            name = _LOGICAL_TYPES[logical]
        if name == DECIMAL and params is None and "scale" in schema:
            params = {"scale": schema["scale"], "connect.decimal.precision": schema.get("precision")}
        return leaf_converter(connect_type, name, params, Wire.AVRO, what)

    def _record(self, schema: Mapping[str, Any], namespace: str, what: str) -> Converter | None:
        full_name = _full_name(schema, namespace)
        own_namespace = full_name.rpartition(".")[0]
        connect_name = schema.get("connect.name")
        if is_semantic_struct(connect_name):
            convert = leaf_converter("struct", connect_name, schema.get("connect.parameters"), Wire.AVRO, what)
        else:
            fields = schema.get("fields")
            if not isinstance(fields, list):
                raise SchemaError(f"{what}: record without a 'fields' list")
            convert = StructConverter(self._field(f, own_namespace, what) for f in fields)
        self._named[full_name] = convert
        return convert

    def _field(self, field: Any, namespace: str, parent: str):
        if not isinstance(field, dict) or not isinstance(field.get("name"), str):
            raise SchemaError(f"{parent}: record field without a name: {field!r:.80}")
        name = field["name"]
        what = f"{parent}.{name}"
        convert = self.compile(field.get("type"), namespace, what)
        connect_type, describe = _describe(field.get("type"))
        return name, convert, describe, placeholder_form(connect_type, Wire.AVRO, self._placeholder)


def _full_name(schema: Mapping[str, Any], namespace: str) -> str:
    name = str(schema.get("name", ""))
    if "." in name:
        return name
    space = schema.get("namespace", namespace)
    return f"{space}.{name}" if space else name


def _describe(avro_type: Any) -> tuple[str, str]:
    """(Connect type for the TOAST placeholder's form, a name for error messages) of a field's Avro type."""
    if isinstance(avro_type, list):
        non_null = [t for t in avro_type if t != "null"]
        avro_type = non_null[0] if len(non_null) == 1 else "union"
    if isinstance(avro_type, dict):
        kind = avro_type.get("type")
        connect_type = "array" if kind == "array" else _AVRO_PRIMITIVES.get(kind, "struct")
        return connect_type, avro_type.get("connect.name") or str(kind)
    return _AVRO_PRIMITIVES.get(avro_type, "struct"), str(avro_type)


def without_logical_types(schema: Any) -> Any:
    """A copy of an Avro schema with every `logicalType` dropped: fastavro then returns raw values."""
    if isinstance(schema, dict):
        return {k: without_logical_types(v) for k, v in schema.items() if k != "logicalType"}
    if isinstance(schema, list):
        return [without_logical_types(item) for item in schema]
    return schema


class _CompiledAvro:
    __slots__ = ("codec", "convert", "reader_schema")

    def __init__(self, writer_schema: Any, placeholder: str) -> None:
        try:
            self.reader_schema = fastavro.parse_schema(without_logical_types(writer_schema))
        except Exception as exc:  # noqa: BLE001 - fastavro raises several types for a bad schema
            raise SchemaError(f"not a valid Avro schema: {exc}") from None
        self.convert = compile_avro_schema(writer_schema, placeholder=placeholder)
        self.codec = EnvelopeCodec(self.convert)

    def read(self, body: memoryview) -> Any:
        stream = io.BytesIO(body)
        try:
            datum = fastavro.schemaless_reader(stream, self.reader_schema, None)
        except (EOFError, ValueError, IndexError, KeyError, TypeError, OverflowError, struct.error) as exc:
            raise InvalidAvro(f"Avro body does not match its schema: {type(exc).__name__}: {exc}") from None
        if stream.tell() != len(body):
            raise InvalidAvro(f"Avro body does not match its schema: {len(body) - stream.tell()} bytes left over")
        return datum


class AvroDecoder(ChangeDecoder):
    """Decodes Debezium records in Confluent Avro wire format. Schemas are fetched once per id and compiled."""

    def __init__(self, schemas: SchemaSource | str, *, unavailable_placeholder: str = UNAVAILABLE.TEXT) -> None:
        """schemas: a SchemaSource, or a registry URL (then a `schema_registry.RegistryClient` asks it)."""
        if isinstance(schemas, str):  # a URL: the HTTP client (the I/O edge) is imported only then
            from cdc_consumer.schema_registry import RegistryClient

            schemas = RegistryClient(schemas)
        self._schemas = schemas
        self._placeholder = unavailable_placeholder
        self._compiled: dict[SchemaRef, _CompiledAvro] = {}
        self._headers = Decoder(unavailable_placeholder=unavailable_placeholder)  # headers stay JSON

    def _value_event(self, value: bytes, **record: Any) -> ChangeEvent:
        compiled, datum = self._read(value)
        return compiled.codec.event(datum, **record)

    def decode_key(self, key: bytes | None) -> dict[str, Any] | None:
        if key is None:
            return None
        compiled, datum = self._read(key)
        if compiled.convert is not None:
            try:
                datum = compiled.convert(datum)
            except DecodeError as exc:
                raise type(exc)(f"key.{exc.reason}") from None
        if datum.__class__ is not dict:
            raise InvalidValue(f"key: expected a record, got {datum!r:.80}")
        return datum

    def key_headers(self, headers: Mapping[str, bytes | None]) -> dict[str, Any]:
        """Primary-key-change headers (written by Connect's JSON header converter), decoded."""
        return self._headers.key_headers(headers)

    def _read(self, data: bytes) -> tuple[_CompiledAvro, Any]:
        ref, body = ConfluentWireFormat.split(data)
        compiled = self._compiled.get(ref)
        if compiled is None:
            compiled = self._compiled[ref] = _CompiledAvro(self._schemas.schema(ref), self._placeholder)
        return compiled, compiled.read(body)
