"""Debezium change events written by Confluent's AvroConverter -> `ChangeEvent` (pure: no I/O here).

Bytes are in Confluent's wire format (`ConfluentWireFormat`): magic byte 0 + 4-byte big-endian schema id,
or magic 1 + a 16-byte schema GUID, then the Avro binary body. Schemas come from a `SchemaSource`
(`schema_registry.py` has the HTTP client and a file-backed one). Each schema is compiled once, by one walk
(`_AvroCompiler`), into two readers that give identical results:

- Native (the C extension `_avro_native`, built by setup.py): fastavro alone reads at about a third of the
  150,000 events/s target before any Connect semantics, so the body is decoded in C straight into the final
  values — records as dicts, Decimal (exact, from the digit string), datetime and date for the hot Connect
  types, the TOAST placeholder replaced — and a change envelope straight into its ChangeEvent. Rarer types
  call their Python converter from `debezium.py` (one source of semantics). A body that does not fit the
  schema raises `InvalidAvro`; a value that fits but cannot be converted is re-read on the fastavro path,
  so its error is exactly the one that path raises.
- fastavro: `schemaless_reader`, then the same converters as the JSON path, by each field's `connect.name`.
  It is used when the extension is not built (or `AvroDecoder(native=False)`), and is the tests' oracle.
  fastavro's own logical types are switched off (the `logicalType` keys are dropped before parsing) so
  every Decimal goes through the one exact converter.
"""

from __future__ import annotations

import io
import struct
import uuid
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, Protocol

import fastavro

from cdc_consumer.debezium import (
    DECIMAL,
    MAX_SCHEMA_DEPTH,
    Converter,
    StructConverter,
    Wire,
    array_converter,
    brief,
    is_semantic_struct,
    leaf_converter,
    map_converter,
    placeholder_form,
)
from cdc_consumer.decoder import Decoder
from cdc_consumer.envelope import EnvelopeCodec, at_record, header_map, native_event_types, tombstone_event
from cdc_consumer.errors import DecodeError, InvalidAvro, InvalidValue, SchemaError, SchemaRef, WireFormatError
from cdc_consumer.events import UNAVAILABLE, ChangeEvent, RecordContext

try:
    import cdc_consumer._avro_native as _avro_native
except ImportError:  # the C extension was not built: fastavro reads every record
    _avro_native = None

__all__ = ["AvroDecoder", "ConfluentWireFormat", "SchemaSource", "compile_avro_schema"]


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
    return _AvroCompiler(placeholder).compile(schema, "", "value").convert


class _Node(NamedTuple):
    """One schema node compiled for both readers: the converter of the raw value fastavro returns, and the
    extension's description of reading it (the grammar is atop _avro_native.c)."""

    convert: Converter | None
    program: tuple


# Connect names on an Avro int or long that the extension converts itself (the hot types)
_NATIVE_INTEGER_CONVERSIONS = {
    "io.debezium.time.MicroTimestamp": ("timestamp_us",), "io.debezium.time.NanoTimestamp": ("timestamp_ns",),
    "io.debezium.time.Timestamp": ("timestamp_ms",), "org.apache.kafka.connect.data.Timestamp": ("timestamp_ms",),
    "io.debezium.time.Date": ("date",), "org.apache.kafka.connect.data.Date": ("date",),
}
_ZONED_TIMESTAMP = "io.debezium.time.ZonedTimestamp"
_MAX_FIXED_SIZE = 1 << 20  # Connect writes fixed only for decimals (a few bytes); this bounds a body's reads


class _AvroCompiler:
    def __init__(self, placeholder: str) -> None:
        self._placeholder = placeholder
        self._named: dict[str, _Node] = {}
        self._depth = 0

    def compile(self, schema: Any, namespace: str, what: str) -> _Node:
        """One schema node; containers nested deeper than debezium.MAX_SCHEMA_DEPTH are a SchemaError."""
        if self._depth >= MAX_SCHEMA_DEPTH:
            raise SchemaError(f"{what}: nested more than {MAX_SCHEMA_DEPTH} levels deep")
        self._depth += 1
        try:
            return self._compile(schema, namespace, what)
        finally:
            self._depth -= 1

    def _compile(self, schema: Any, namespace: str, what: str) -> _Node:
        if isinstance(schema, str):
            return self._reference(schema, namespace, what)
        if isinstance(schema, list):
            return self._union(schema, namespace, what)
        if not isinstance(schema, dict) or "type" not in schema:
            raise SchemaError(f"{what}: not an Avro schema: {brief(schema, 80)}")
        kind = schema["type"]
        if kind == "record" or kind == "error":
            return self._record(schema, namespace, what)
        if kind == "array":
            items = self.compile(schema.get("items"), namespace, f"{what}[]")
            return _Node(array_converter(items.convert), ("array", items.program))
        if kind == "map":
            values = self.compile(schema.get("values"), namespace, f"{what}{{}}")
            return _Node(map_converter(None, values.convert), ("map", values.program))
        if isinstance(kind, (dict, list)):  # {"type": {...}} wraps another schema
            return self.compile(kind, namespace, what)
        node = self._leaf(schema, kind, what)
        if kind in ("enum", "fixed"):
            self._named[_full_name(schema, namespace)] = node
        return node

    def _reference(self, name: str, namespace: str, what: str) -> _Node:
        if name in _AVRO_PRIMITIVES:
            return self._leaf({}, name, what)
        if name == "null":
            return _Node(None, ("null",))
        for candidate in (f"{namespace}.{name}" if namespace and "." not in name else name, name):
            if candidate in self._named:
                return self._named[candidate]
        raise SchemaError(f"{what}: unknown Avro type {brief(name)}")

    def _union(self, branches: list[Any], namespace: str, what: str) -> _Node:
        nodes = [self.compile(branch, namespace, what) for branch in branches]
        program = ("union", tuple(node.program for node in nodes))
        converters = [node.convert for branch, node in zip(branches, nodes) if branch != "null"]
        if len(converters) == 1:
            return _Node(converters[0], program)
        if any(c is not None for c in converters):
            raise SchemaError(f"{what}: unions of several non-null types are not Connect schemas")
        return _Node(None, program)

    def _leaf(self, schema: Mapping[str, Any], kind: str, what: str) -> _Node:
        connect_type = schema.get("connect.type") or _AVRO_PRIMITIVES.get(kind)
        if connect_type is None:
            raise SchemaError(f"{what}: unknown Avro type {brief(kind)}")
        if kind == "fixed" and not (schema.get("size").__class__ is int and 0 <= schema["size"] <= _MAX_FIXED_SIZE):
            raise SchemaError(f"{what}: fixed size {brief(schema.get('size'))} is not within 0..{_MAX_FIXED_SIZE}")
        name = schema.get("connect.name")
        params = schema.get("connect.parameters")
        logical = schema.get("logicalType")
        if name is None and logical in _LOGICAL_TYPES:
            name = _LOGICAL_TYPES[logical]
        if name == DECIMAL and params is None and "scale" in schema:
            params = {"scale": schema["scale"], "connect.decimal.precision": schema.get("precision")}
        convert = leaf_converter(connect_type, name, params, Wire.AVRO, what)
        return _Node(convert, _native_leaf(schema, kind, name, params or {}, convert))

    def _record(self, schema: Mapping[str, Any], namespace: str, what: str) -> _Node:
        full_name = _full_name(schema, namespace)
        own_namespace = full_name.rpartition(".")[0]
        fields = schema.get("fields")
        if not isinstance(fields, list):
            raise SchemaError(f"{what}: record without a 'fields' list")
        compiled = [self._field(f, own_namespace, what) for f in fields]
        program = ("record", tuple((name, node.program, form) for name, node, _, form in compiled))
        connect_name = schema.get("connect.name")
        if is_semantic_struct(connect_name):  # one value (VariableScaleDecimal), not a dict
            convert = leaf_converter("struct", connect_name, schema.get("connect.parameters"), Wire.AVRO, what)
            node = _Node(convert, ("call", program, convert))
        else:
            node = _Node(StructConverter((name, node.convert, describe, form)
                                         for name, node, describe, form in compiled), program)
        self._named[full_name] = node
        return node

    def _field(self, field: Any, namespace: str, parent: str) -> tuple[str, _Node, str, Any]:
        if not isinstance(field, dict) or not isinstance(field.get("name"), str):
            raise SchemaError(f"{parent}: record field without a name: {brief(field, 80)}")
        name = field["name"]
        node = self.compile(field.get("type"), namespace, f"{parent}.{name[:60]}")
        connect_type, describe = _describe(field.get("type"))
        form = placeholder_form(connect_type, Wire.AVRO, self._placeholder)
        if isinstance(form, list) and node.convert is not None:
            # an array placeholder is matched on the raw items, so Python converts this array after it
            node = _Node(node.convert, ("call", node.program, node.convert))
        return name, node, describe, form


def _native_leaf(schema: Mapping[str, Any], kind: str, name: str | None, params: Mapping[str, Any],
                 convert: Converter | None) -> tuple:
    """The extension's reading of a leaf: its own conversion for the hot Connect types, else a call of `convert`."""
    extra = (schema["size"],) if kind == "fixed" else (tuple(schema["symbols"]),) if kind == "enum" else ()
    conversion: tuple | None  # the extension's own conversion (grammar atop _avro_native.c), None: none
    if name == DECIMAL and kind in ("bytes", "fixed"):
        precision = params.get("connect.decimal.precision")
        conversion = ("decimal", int(params["scale"]), None if precision is None else int(precision))
    elif name == _ZONED_TIMESTAMP and kind == "string":
        conversion = ("zoned_timestamp", convert)  # `convert` handles offsets other than UTC
    else:
        conversion = _NATIVE_INTEGER_CONVERSIONS.get(name) if name is not None and kind in ("int", "long") else None
    if conversion is None and convert is not None:
        return ("call", (kind, None, *extra), convert)
    return (kind, conversion, *extra)


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
        kind = str(avro_type.get("type"))
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
    """One writer schema, compiled once: fastavro's reader with the Python converters (the fallback, and the
    oracle the tests compare with), and the extension's key reader and value-event reader when it is built."""

    __slots__ = ("codec", "convert", "native_key", "native_value", "reader_schema")

    def __init__(self, writer_schema: Any, placeholder: str, *, native: bool) -> None:
        try:
            self.reader_schema = fastavro.parse_schema(without_logical_types(writer_schema))
        except Exception as exc:  # noqa: BLE001 - fastavro raises several types for a bad schema
            raise SchemaError(f"not a valid Avro schema: {exc}") from None
        root = _AvroCompiler(placeholder).compile(writer_schema, "", "value")
        self.convert = root.convert
        self.codec = EnvelopeCodec(root.convert)
        self.native_key, self.native_value = _native_readers(root.program) if native else (None, None)

    def value_event(self, data: bytes, start: int, record: RecordContext, key: dict[str, Any] | None,
                    headers: Mapping[str, bytes | None]) -> ChangeEvent:
        """The event of the Avro body data[start:]."""
        if self.native_value is not None:
            event = _read_native(self.native_value, data, start, record.topic, key, headers, record.partition,
                                 record.offset)
            if event is not _CONVERT_IN_PYTHON:
                return event
        payload = self.read(memoryview(data)[start:])
        return self.codec.event(payload, record, key, headers)

    def key(self, data: bytes, start: int) -> Any:
        """The converted key datum of the Avro body data[start:]."""
        if self.native_key is not None:
            datum = _read_native(self.native_key, data, start)
            if datum.__class__ is dict:  # anything else: the fastavro path names the problem as it always has
                return datum
        datum = self.read(memoryview(data)[start:])
        if self.convert is not None:
            try:
                datum = self.convert(datum)
            except DecodeError as exc:
                raise type(exc)(f"key.{exc.reason}") from None
        return datum

    def read(self, body: memoryview) -> Any:
        """fastavro's raw datum of a body (no Connect semantics applied yet)."""
        stream = io.BytesIO(body)
        try:
            datum = fastavro.schemaless_reader(stream, self.reader_schema, None)
        except (EOFError, ValueError, IndexError, KeyError, TypeError, OverflowError, struct.error) as exc:
            raise InvalidAvro(f"Avro body does not match its schema: {type(exc).__name__}: {exc}") from None
        if stream.tell() != len(body):
            raise InvalidAvro(f"Avro body does not match its schema: {len(body) - stream.tell()} bytes left over")
        return datum


# ------------------------------------------------------------------------------- native readers

# Native payloads are converted already: EnvelopeCodec only builds the event from them.
_CONVERTED_PAYLOAD = EnvelopeCodec(None)
_CONVERT_IN_PYTHON = object()
# What a failed conversion raises (StructConverter's list, plus the converters' own DecodeErrors)
_CONVERSION_ERRORS = (ValueError, TypeError, KeyError, OverflowError, ArithmeticError, AttributeError, DecodeError)
_ENVELOPE_ROWS = ("before", "after")


_EVENT_TYPES = native_event_types(_avro_native)  # what Program.event needs, None when events.py changed


def _native_readers(program: tuple) -> tuple[Callable | None, Callable | None]:
    """The extension's key reader (converted throughout, like decode_key) and value-event reader (like
    EnvelopeCodec.event); None where the fastavro path has to read."""
    if _avro_native is None:
        return None, None
    try:
        return _avro_native.Program(program, True, UNAVAILABLE).read, _value_reader(program)
    except (ValueError, TypeError, OverflowError):  # a description the extension refuses (e.g. a huge scale)
        return None, None


def _value_reader(program: tuple) -> Callable | None:
    """(data, start, topic, key, headers, partition, offset) -> ChangeEvent, reading what EnvelopeCodec.event
    would convert converted and the rest raw."""
    if program[0] != "record":  # EnvelopeCodec rejects a non-struct payload before converting anything
        return _payload_events(_avro_native.Program(program, False, UNAVAILABLE))
    fields = {name: node for name, node, _ in program[1]}
    if "op" not in fields:  # transaction BEGIN/END: EnvelopeCodec converts the whole payload
        return _payload_events(_avro_native.Program(program, True, UNAVAILABLE))
    if _may_be_null(fields["op"]):  # change event or transaction marker is decided per record: fastavro reads
        return None
    envelope = ("record", tuple((name, ("converted", node) if name in _ENVELOPE_ROWS else node, form)
                                for name, node, form in program[1]))
    if _EVENT_TYPES is not None and fields.get("source", ("record",))[0] == "record":
        return _avro_native.Program(envelope, False, UNAVAILABLE, _EVENT_TYPES).event
    return _payload_events(_avro_native.Program(envelope, False, UNAVAILABLE))


def _payload_events(program: Any) -> Callable:
    """Payloads the extension reads and EnvelopeCodec turns into events (markers, unusual envelopes)."""
    read, event = program.read, _CONVERTED_PAYLOAD.event

    def value_event(data, start, topic, key, headers, partition, offset):
        return event(read(data, start), RecordContext(topic, partition, offset), key, headers)

    return value_event


def _may_be_null(program: tuple) -> bool:
    kind = program[0]
    if kind == "union":
        return any(_may_be_null(branch) for branch in program[1])
    if kind in ("call", "converted"):
        return _may_be_null(program[1])
    return kind == "null"


def _read_native(read: Callable, *args: Any) -> Any:
    """read(*args), or _CONVERT_IN_PYTHON for a value the extension could not convert: the fastavro path
    then re-reads the body and raises exactly the error it always has."""
    try:
        return read(*args)
    except _avro_native.MalformedAvro as exc:
        raise InvalidAvro(f"Avro body does not match its schema: {exc}") from None
    except _CONVERSION_ERRORS:
        return _CONVERT_IN_PYTHON


class AvroDecoder:
    """Decodes Debezium records in Confluent Avro wire format. Schemas are fetched once per id and compiled."""

    _HEADER = 5  # magic byte 0 + schema id: the framing of nearly every record

    def __init__(self, schemas: SchemaSource | str, *, unavailable_placeholder: str = UNAVAILABLE.TEXT,
                 native: bool = True) -> None:
        """schemas: a SchemaSource, or a registry URL (then a `schema_registry.RegistryClient` asks it).
        native: read with the C extension when it is built; False always takes the fastavro path."""
        if isinstance(schemas, str):  # a URL: the HTTP client (the I/O edge) is imported only then
            from cdc_consumer.schema_registry import RegistryClient

            schemas = RegistryClient(schemas)
        self._schemas = schemas
        self._placeholder = unavailable_placeholder
        self._native = native and _avro_native is not None
        self._compiled: dict[SchemaRef, _CompiledAvro] = {}
        self._by_header: dict[bytes, _CompiledAvro] = {}  # b"\x00" + schema id -> its compiled schema
        # Connect writes the primary-key-change headers with its JSON header converter, Avro values or not
        self._headers = Decoder(unavailable_placeholder=unavailable_placeholder)

    @property
    def native(self) -> bool:
        """Whether the C extension reads this decoder's records."""
        return self._native

    def decode_record(self, record: RecordContext, value: bytes | None) -> ChangeEvent:
        """One Kafka record -> its event. Raises a DecodeError subclass that names the record (topic,
        partition, offset) and the reason; never anything else for bad input (RegistryError when its schema
        cannot be had)."""
        try:
            headers = header_map(record.headers)
            key = self.decode_key(record.key)
            if value is None:
                return tombstone_event(record, key, headers)
            compiled, start = self._framed(value)
            return compiled.value_event(value, start, record, key, headers)
        except DecodeError as exc:
            raise at_record(exc, record) from None

    def decode(self, topic: str, key: bytes | None, value: bytes | None, headers: Any = None,
               partition: int | None = None, offset: int | None = None) -> ChangeEvent:
        """decode_record of a record given as loose values (files, tests). headers: confluent-kafka's
        [(name, bytes)] or a mapping."""
        return self.decode_record(RecordContext(topic, partition, offset, None, headers, key), value)

    def decode_key(self, key: bytes | str | None) -> dict[str, Any] | None:
        if key is None:
            return None
        if isinstance(key, str):  # a client configured with a string key deserializer
            key = key.encode()
        compiled, start = self._framed(key)
        datum = compiled.key(key, start)
        if datum.__class__ is not dict:
            raise InvalidValue(f"key: expected a record, got {datum!r:.80}")
        return datum

    def key_headers(self, headers: Mapping[str, bytes | None]) -> dict[str, Any]:
        """Primary-key-change headers (written by Connect's JSON header converter), decoded."""
        return self._headers.key_headers(headers)

    def _framed(self, data: bytes) -> tuple[_CompiledAvro, int]:
        """The compiled schema a record names, and where its Avro body starts."""
        compiled = self._by_header.get(data[:self._HEADER]) if data.__class__ is bytes else None
        if compiled is not None:  # a header seen before: no parsing, no memoryview
            return compiled, self._HEADER
        ref, body = ConfluentWireFormat.split(data)
        compiled = self._compiled.get(ref)
        if compiled is None:
            compiled = self._compiled[ref] = _CompiledAvro(self._schemas.schema(ref), self._placeholder,
                                                           native=self._native)
        if data[0] == ConfluentWireFormat.MAGIC_ID:
            self._by_header[bytes(data[:self._HEADER])] = compiled
        return compiled, len(data) - len(body)
