"""Debezium change events written by Kafka Connect's JsonConverter -> `ChangeEvent` (pure: bytes in, no I/O).

    decoder = Decoder()
    event = decoder.decode_record(RecordContext.of(message), message.value())
    event = decoder.decode(topic, key_bytes, value_bytes, headers, partition, offset)  # loose values

With `schemas.enable=true` every record is `{"schema": S, "payload": P}` and S repeats on every record of
a table. The decoder compiles S once into per-field converters (`debezium.py`) and caches them by S's
exact text: JsonConverter writes `{"schema":` first, so the schema text is found by one byte search and
only the payload is parsed. Anything else (other spacing, a schema-less record) takes the general path.

Numbers: orjson reads JSON numbers as int64 or binary float. A Decimal sent as a JSON number
(`decimal.format=NUMERIC`) would lose digits that way, so when a Decimal field meets a float the record
is parsed again with the standard library and `parse_float=Decimal`, and that schema keeps using it.

Native: the schema walk builds, beside the Python converters, a description of the same conversions for
the C extension `_json_native` (built by setup.py; grammar atop _json_native.c). When it is built, the
parsed payload is converted in C — base64 decimals to Decimal, timestamps and dates, the TOAST
placeholder — and a change envelope becomes its ChangeEvent directly; rare types call their Python
converter. Any error there (or a payload it does not handle: transaction markers) sends the record down
the Python path, parsed afresh, which stays the fallback (`Decoder(native=False)`, or no extension) and
the tests' oracle, and raises the exact named error.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, NamedTuple

import orjson

from cdc_consumer.debezium import (
    DECIMAL,
    MAX_SCHEMA_DEPTH,
    PLAIN_CHECKS,
    Converter,
    StructConverter,
    Wire,
    array_converter,
    brief,
    bytes_from_base64,
    decimal_parameters,
    is_semantic_struct,
    json_double,
    leaf_converter,
    map_converter,
    placeholder_form,
)
from cdc_consumer.envelope import EnvelopeCodec, at_record, header_map, native_event_types, tombstone_event
from cdc_consumer.errors import DecodeError, InexactNumber, InvalidJson, InvalidValue, SchemaError
from cdc_consumer.events import UNAVAILABLE, ChangeEvent, RecordContext

try:
    import cdc_consumer._json_native as _json_native
except ImportError:  # the C extension was not built: the Python converters decode every record
    _json_native = None

__all__ = ["Decoder", "compile_connect_schema"]

_SCHEMA_PREFIX = b'{"schema":'
_PAYLOAD_SEPARATOR = b',"payload":'
PK_CHANGE_HEADERS = {"__debezium.newkey": "newkey", "__debezium.oldkey": "oldkey"}


def compile_connect_schema(schema: Any, *, placeholder: str = UNAVAILABLE.TEXT, what: str = "value",
                           wire: Wire = Wire.JSON) -> Converter | None:
    """Walk a Connect schema (JsonConverter's `schema` object) once; returns its value converter or None."""
    return _compile_node(schema, placeholder, what, wire).convert


class _Node(NamedTuple):
    """One schema node compiled for both paths: its Python converter (None: the value stays as parsed) and
    the extension's description of the same conversion (the grammar is atop _json_native.c)."""

    convert: Converter | None
    plan: Any


# Connect names whose converter the extension runs itself for the usual wire value (the hot types)
_NATIVE_LEAVES = {
    "io.debezium.time.ZonedTimestamp": "zoned_timestamp", "io.debezium.time.MicroTimestamp": "timestamp_us",
    "io.debezium.time.NanoTimestamp": "timestamp_ns", "io.debezium.time.Timestamp": "timestamp_ms",
    "org.apache.kafka.connect.data.Timestamp": "timestamp_ms", "io.debezium.time.Date": "date",
    "org.apache.kafka.connect.data.Date": "date",
}


def _compile_node(schema: Any, placeholder: str, what: str, wire: Wire, depth: int = 0) -> _Node:
    if schema.__class__ is not dict or not isinstance(schema.get("type"), str):
        raise SchemaError(f"{what}: not a Connect schema: {brief(schema, 80)}")
    if depth > MAX_SCHEMA_DEPTH:
        raise SchemaError(f"{what}: nested more than {MAX_SCHEMA_DEPTH} levels deep")
    kind, name = schema["type"], schema.get("name")
    if name is not None and name.__class__ is not str:
        raise SchemaError(f"{what}: a schema name must be a string, not {brief(name)}")
    if kind == "struct" and not is_semantic_struct(name):
        fields = schema.get("fields")
        if not isinstance(fields, list):
            raise SchemaError(f"{what}: struct without a 'fields' list")
        compiled = [_compile_field(field, placeholder, wire, what, depth + 1) for field in fields]
        convert: Converter | None = StructConverter((name, node.convert, describe, form)
                                                    for name, node, describe, form in compiled)
        if len({name for name, *_ in compiled}) < len(compiled):  # one entry per name in StructConverter
            return _Node(convert, ("call", convert))
        return _Node(convert, ("struct", tuple((name, node.plan, form) for name, node, _, form in compiled), convert))
    if kind == "array":
        items = _compile_node(schema.get("items"), placeholder, f"{what}[]", wire, depth + 1)
        convert = array_converter(items.convert)
        return _Node(convert, None if convert is None else ("array", items.plan, convert))
    if kind == "map":
        convert = map_converter(_compile_node(schema.get("keys"), placeholder, f"{what} key", wire, depth + 1).convert,
                                _compile_node(schema.get("values"), placeholder, f"{what}{{}}", wire, depth + 1).convert)
        return _Node(convert, ("call", convert))
    params = schema.get("parameters")
    convert = leaf_converter(kind, name, params, wire, what)
    return _Node(convert, _leaf_plan(name, params, convert))


_PLAIN_PLANS = {check: ("integer", int(connect_type[3:])) if connect_type.startswith("int") else (connect_type,)
                for connect_type, check in PLAIN_CHECKS.items()}


def _leaf_plan(name: Any, params: Any, convert: Converter | None) -> Any:
    """The extension's description of a leaf whose Python converter leaf_converter returned."""
    if convert is None:
        return None
    plain = _PLAIN_PLANS.get(convert)
    if plain is not None:
        return (*plain, convert)
    if name == DECIMAL:
        return ("decimal", *decimal_parameters(params, "decimal"), convert)
    tag = _NATIVE_LEAVES.get(name)
    if tag is None:
        tag = "double" if convert is json_double else "bytes" if convert is bytes_from_base64 else "call"
    return (tag, convert)


def _compile_field(field: Any, placeholder: str, wire: Wire, parent: str, depth: int) -> tuple[str, _Node, Any, Any]:
    name = field.get("field") if field.__class__ is dict else None
    if not isinstance(name, str):
        raise SchemaError(f"{parent}: struct field without a name: {brief(field, 80)}")
    node = _compile_node(field, placeholder, f"{parent}.{name[:60]}", wire, depth)
    describe = field.get("name") if isinstance(field.get("name"), str) else field["type"]
    return name, node, describe, placeholder_form(field["type"], wire, placeholder)


_EVENT_TYPES = native_event_types(_json_native)


class _Compiled:
    """A schema seen on the wire, compiled; `exact_numbers` once it proved to carry NUMERIC decimals.

    The extension's Programs, None where it is not built or refuses the description: `key_program`
    converts as `convert` does, `event_program` builds change events as `codec.event` does (None from it:
    the payload is something else, untouched). `text`: the schema as it appeared on the wire, when the
    byte-search path met it.
    """

    __slots__ = ("codec", "convert", "event_program", "exact_numbers", "key_program", "native_convert",
                 "native_event", "text")
    convert: Converter | None
    text: bytes | None
    key_program: Any  # _json_native.Program, or None
    event_program: Any

    def __init__(self, root: _Node | None, codec: EnvelopeCodec, *, native: bool = False) -> None:
        self.convert = None if root is None else root.convert
        self.codec, self.exact_numbers, self.text = codec, False, None
        self.key_program = self.event_program = None
        if native and root is not None:
            self.key_program, self.event_program = _native_programs(root)
        self.native_convert = None if self.key_program is None else self.key_program.convert
        self.native_event = None if self.event_program is None else self.event_program.event


def _native_programs(root: _Node) -> tuple[Any, Any]:
    try:
        program = _json_native.Program(root.plan, UNAVAILABLE)
    except (ValueError, TypeError, OverflowError):  # a description the extension refuses (e.g. a huge scale)
        return None, None
    if _EVENT_TYPES is None or root.plan is None or root.plan[0] != "struct":
        return program, None  # not an envelope EnvelopeCodec converts the rows of
    rows = {name: plan for name, plan, _ in root.plan[1]}
    return program, _json_native.Program(("envelope", rows.get("before"), rows.get("after")), UNAVAILABLE,
                                         _EVENT_TYPES)


_NOT_CONVERTED = object()


class Decoder:
    """Decodes Debezium JSON records (JsonConverter, schemas enabled or not). Not thread-safe (caches)."""

    def __init__(self, *, unavailable_placeholder: str = UNAVAILABLE.TEXT, max_cached_schemas: int = 1024,
                 native: bool = True) -> None:
        """native: convert payloads with the C extension when it is built; False: always the Python path."""
        self._placeholder = unavailable_placeholder
        self._native = native and _json_native is not None
        self.native_fallbacks = 0  # records the extension handed to the Python path (tests and benchmarks)
        self._max_cached = max_cached_schemas
        # Schemas as they appear on the wire, by text length: a record that starts with a known schema text
        # followed by `,"payload":` needs neither a byte search nor a hash of its 5 KB schema.
        self._by_length: dict[int, list[tuple[bytes, _Compiled]]] = {}
        self._by_canonical: dict[bytes, _Compiled] = {}  # schemas met on the general path
        self._cached = 0
        self._untyped = _Compiled(None, EnvelopeCodec.untyped(unavailable_placeholder))
        # The extension's copy of _by_length: records whose key and value schemas it knows decode in one call
        self._known = _json_native.KnownSchemas(orjson.loads, header_map) if self._native else None

    # -------------------------------------------------------------------------------- public
    @property
    def native(self) -> bool:
        """Whether the C extension converts this decoder's payloads."""
        return self._native

    def decode_record(self, record: RecordContext, value: bytes | str | None) -> ChangeEvent:
        """One Kafka record -> its event. Raises a DecodeError subclass that names the record (topic,
        partition, offset) and the reason; never anything else for bad input. In one call of the extension
        when it knows both schemas (the usual record)."""
        if self._known is not None:
            try:
                event = self._known.decode(record.topic, record.key, value, record.headers, record.partition,
                                           record.offset)
            except Exception:  # noqa: BLE001 - the Python-level path below names the problem, or decodes it
                self.native_fallbacks += 1
            else:
                if event is not None:
                    return event
        try:
            headers = header_map(record.headers)
            key = self.decode_key(record.key)
            event = None if value is None else self._value_event(value, record, key, headers)
            return tombstone_event(record, key, headers) if event is None else event
        except DecodeError as exc:
            raise at_record(exc, record) from None

    def decode(self, topic: str, key: bytes | str | None, value: bytes | str | None, headers: Any = None,
               partition: int | None = None, offset: int | None = None) -> ChangeEvent:
        """decode_record of a record given as loose values (files, tests). headers: confluent-kafka's
        [(name, bytes)] or a mapping."""
        return self.decode_record(RecordContext(topic, partition, offset, None, headers, key), value)

    def decode_key(self, key: bytes | str | None) -> dict[str, Any] | None:
        """A record key (`{schema, payload}` or plain JSON) as a dict of decoded values; None stays None."""
        if key is None:
            return None
        data = key.encode() if isinstance(key, str) else key
        try:
            return self._key(data, exact=False)
        except InexactNumber:
            return self._key(data, exact=True)

    def key_headers(self, headers: Mapping[str, bytes | None]) -> dict[str, Any]:
        """The primary-key-change headers of a record, decoded: {"newkey": {...}} and/or {"oldkey": {...}}.

        Connect's JsonConverter writes them as `{schema, payload}`; its default SimpleHeaderConverter as
        schema-less JSON with decimals as numbers (`"price":-1E-8`), read here with exact numbers.
        """
        found = {}
        for header, label in PK_CHANGE_HEADERS.items():
            raw = headers.get(header)
            if raw is not None:
                found[label] = self._key(raw, exact=True)
        return found

    # ------------------------------------------------------------------------------- parsing

    def _value_event(self, value: bytes | str, record: RecordContext, key: dict[str, Any] | None,
                     headers: Mapping[str, bytes | None]) -> ChangeEvent | None:
        data = value.encode() if isinstance(value, str) else value
        compiled, payload = self._document(data, exact=False)
        if payload is None:  # `{"schema": null, "payload": null}`: a tombstone in JSON's own spelling
            return None
        if compiled.native_event is not None:
            try:
                event = compiled.native_event(payload, record.topic, key, headers, record.partition, record.offset)
            except Exception:  # noqa: BLE001 - the Python path names the problem (or re-parses NUMERIC decimals)
                self.native_fallbacks += 1
                compiled, payload = self._document(data, exact=False)  # afresh: rows were converted in place
            else:
                if event is not None:
                    return event
        try:
            return compiled.codec.event(payload, record, key, headers)
        except InexactNumber:  # decimal.format=NUMERIC: read this schema's records with exact numbers
            self._exact_numbers(compiled)
            compiled, payload = self._document(data, exact=True)
            return compiled.codec.event(payload, record, key, headers)

    def _key(self, data: bytes, exact: bool) -> dict[str, Any] | None:
        compiled, payload = self._document(data, exact=exact)
        if compiled.convert is not None and payload is not None:
            converted = _NOT_CONVERTED
            if compiled.native_convert is not None:
                try:
                    converted = compiled.native_convert(payload)
                except Exception:  # noqa: BLE001 - the Python path below names the problem
                    self.native_fallbacks += 1
                    compiled, payload = self._document(data, exact=exact)  # afresh: converted in place
            payload = converted if converted is not _NOT_CONVERTED else self._python_key(compiled, payload)
        if payload is not None and payload.__class__ is not dict:
            raise InvalidValue(f"key: expected a struct, got {payload!r:.80}")
        return payload

    def _python_key(self, compiled: _Compiled, payload: Any) -> Any:
        assert compiled.convert is not None, "called for a key schema that converts"
        try:
            return compiled.convert(payload)
        except InexactNumber:
            self._exact_numbers(compiled)
            raise
        except DecodeError as exc:
            raise type(exc)(f"key.{exc.reason}") from None
        except (ValueError, TypeError, KeyError, OverflowError, ArithmeticError, AttributeError) as exc:
            # a key schema whose root is not a struct (an array, a map) converts without StructConverter's net
            raise InvalidValue(f"key: cannot decode {brief(payload)}: {exc}") from None

    def _exact_numbers(self, compiled: _Compiled) -> None:
        """From now on this schema's records are parsed with exact numbers, on the Python-level path."""
        compiled.exact_numbers = True
        if self._known is not None and compiled.text is not None:
            self._known.discard(compiled.text)

    def _document(self, data: bytes, *, exact: bool) -> tuple[_Compiled, Any]:
        """(compiled schema, payload) of one JSON document; the untyped entry when it has no schema."""
        if data.startswith(_SCHEMA_PREFIX) and data.endswith(b"}"):
            found = self._known_schema(data) or self._new_schema(data)
            if found is not None:
                cut, compiled = found
                payload_text = memoryview(data)[cut + len(_PAYLOAD_SEPARATOR):-1]
                return compiled, _loads(payload_text, exact or compiled.exact_numbers)
        document = _loads(data, exact)
        if document.__class__ is dict and document.keys() == {"schema", "payload"}:
            if document["schema"] is None:
                return self._untyped, document["payload"]
            text = orjson.dumps(document["schema"], option=orjson.OPT_SORT_KEYS)
            known = self._by_canonical.get(text)
            if known is None:
                known = self._by_canonical[text] = self._compile(document["schema"])
            if known.exact_numbers and not exact:
                return self._document(data, exact=True)
            return known, document["payload"]
        return self._untyped, document

    def _known_schema(self, data: bytes) -> tuple[int, _Compiled] | None:
        """A cached schema that `data` starts with. It is a complete JSON value, so it is the schema."""
        for length, entries in self._by_length.items():
            cut = len(_SCHEMA_PREFIX) + length
            if data.startswith(_PAYLOAD_SEPARATOR, cut):
                for text, compiled in entries:
                    if data.startswith(text, len(_SCHEMA_PREFIX)):
                        return cut, compiled
        return None

    def _new_schema(self, data: bytes) -> tuple[int, _Compiled] | None:
        """Compile the schema text before the first `,"payload":`; None if that cut is not a whole schema
        (a key named "payload" inside it): the general path then parses the document as a whole."""
        cut = data.find(_PAYLOAD_SEPARATOR, len(_SCHEMA_PREFIX))
        if cut < 0:
            return None
        text = data[len(_SCHEMA_PREFIX):cut]
        try:
            schema = orjson.loads(text)
        except orjson.JSONDecodeError:
            return None
        if schema is None:  # `{"schema":null,...}`: a schema-less record, for the general path
            return None
        compiled = self._compile(schema)
        self._by_length.setdefault(len(text), []).insert(0, (text, compiled))
        compiled.text = text
        if self._known is not None and (compiled.key_program or compiled.event_program) is not None:
            self._known.add(text, compiled.key_program, compiled.event_program)
        return cut, compiled

    def _compile(self, schema: Any) -> _Compiled:
        if self._cached >= self._max_cached:  # a stream of ever-new schemas must not grow memory forever
            self._by_length.clear()
            self._by_canonical.clear()
            if self._known is not None:
                self._known.clear()
            self._cached = 0
        self._cached += 1
        root = _compile_node(schema, self._placeholder, "value", Wire.JSON)
        return _Compiled(root, EnvelopeCodec(root.convert), native=self._native)


def _loads(text: bytes | memoryview, exact: bool) -> Any:
    """Parse JSON; `exact` keeps every number exact (Decimal for non-integers, Python ints of any size)."""
    try:
        if exact:
            return json.loads(bytes(text), parse_float=Decimal)
        return orjson.loads(text)
    except (orjson.JSONDecodeError, ValueError) as exc:
        raise InvalidJson(f"not valid JSON: {str(exc)[:200]}") from None
    except RecursionError:  # json.loads (exact numbers) nests by recursion; orjson stops at 1024 levels itself
        raise InvalidJson("not valid JSON: nested too deeply") from None
