"""Debezium change events written by Kafka Connect's JsonConverter -> `ChangeEvent` (pure: bytes in, no I/O).

    decoder = Decoder()
    event = decoder.decode(topic, key_bytes, value_bytes, headers, partition, offset)

With `schemas.enable=true` every record is `{"schema": S, "payload": P}` and S repeats on every record of
a table. The decoder compiles S once into per-field converters (`debezium.py`) and caches them by S's
exact text: JsonConverter writes `{"schema":` first, so the schema text is found by one byte search and
only the payload is parsed. Anything else (other spacing, a schema-less record) takes the general path.

Numbers: orjson reads JSON numbers as int64 or binary float. A Decimal sent as a JSON number
(`decimal.format=NUMERIC`) would lose digits that way, so when a Decimal field meets a float the record
is parsed again with the standard library and `parse_float=Decimal`, and that schema keeps using it.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any, Mapping, Protocol

import orjson

from cdc_consumer.debezium import (
    EnvelopeCodec,
    InexactNumber,
    InvalidValue,
    SchemaError,
    StructConverter,
    Wire,
    Converter,
    array_converter,
    header_map,
    is_semantic_struct,
    leaf_converter,
    located,
    map_converter,
    placeholder_form,
    tombstone,
)
from cdc_consumer.events import UNAVAILABLE, ChangeEvent, DecodeError

__all__ = ["ChangeDecoder", "Decoder", "InvalidJson", "InvalidValue", "SchemaError", "compile_connect_schema"]

_SCHEMA_PREFIX = b'{"schema":'
_PAYLOAD_SEPARATOR = b',"payload":'
PK_CHANGE_HEADERS = {"__debezium.newkey": "newkey", "__debezium.oldkey": "oldkey"}


class InvalidJson(DecodeError):
    """The key, value or a header is not valid JSON."""


class ChangeDecoder(Protocol):
    """What the consumer needs from a decoder, whatever the wire format."""

    def decode(self, topic: str, key: bytes | str | None, value: bytes | str | None, headers: Any = None,
               partition: int | None = None, offset: int | None = None) -> ChangeEvent: ...

    def key_headers(self, headers: Mapping[str, bytes | None]) -> dict[str, Any]: ...


def compile_connect_schema(schema: Any, *, placeholder: str = UNAVAILABLE.TEXT, what: str = "value",
                           wire: Wire = Wire.JSON) -> Converter | None:
    """Walk a Connect schema (JsonConverter's `schema` object) once; returns its value converter or None."""
    if schema.__class__ is not dict or not isinstance(schema.get("type"), str):
        raise SchemaError(f"{what}: not a Connect schema: {schema!r:.80}")
    kind, name = schema["type"], schema.get("name")
    if kind == "struct" and not is_semantic_struct(name):
        fields = schema.get("fields")
        if not isinstance(fields, list):
            raise SchemaError(f"{what}: struct without a 'fields' list")
        return StructConverter(_compile_field(field, placeholder, wire, what) for field in fields)
    if kind == "array":
        return array_converter(compile_connect_schema(schema.get("items"), placeholder=placeholder,
                                                      what=f"{what}[]", wire=wire))
    if kind == "map":
        return map_converter(
            compile_connect_schema(schema.get("keys"), placeholder=placeholder, what=f"{what} key", wire=wire),
            compile_connect_schema(schema.get("values"), placeholder=placeholder, what=f"{what}{{}}", wire=wire))
    return leaf_converter(kind, name, schema.get("parameters"), wire, what)


def _compile_field(field: Any, placeholder: str, wire: Wire, parent: str):
    name = field.get("field") if field.__class__ is dict else None
    if not isinstance(name, str):
        raise SchemaError(f"{parent}: struct field without a name: {field!r:.80}")
    convert = compile_connect_schema(field, placeholder=placeholder, what=f"{parent}.{name}", wire=wire)
    describe = field.get("name") or field["type"]
    return name, convert, describe, placeholder_form(field["type"], wire, placeholder)


class _Compiled:
    """A schema seen on the wire, compiled; `exact_numbers` once it proved to carry NUMERIC decimals."""

    __slots__ = ("convert", "codec", "exact_numbers")

    def __init__(self, convert: Converter | None, codec: EnvelopeCodec) -> None:
        self.convert, self.codec, self.exact_numbers = convert, codec, False


class Decoder:
    """Decodes Debezium JSON records (JsonConverter, schemas enabled or not). Not thread-safe (caches)."""

    def __init__(self, *, unavailable_placeholder: str = UNAVAILABLE.TEXT, max_cached_schemas: int = 1024) -> None:
        self._placeholder = unavailable_placeholder
        self._max_cached = max_cached_schemas
        self._schemas: dict[bytes, _Compiled] = {}
        self._untyped = _Compiled(None, EnvelopeCodec.untyped(unavailable_placeholder))

    # -------------------------------------------------------------------------------- public

    def decode(self, topic: str, key: bytes | str | None, value: bytes | str | None, headers: Any = None,
               partition: int | None = None, offset: int | None = None) -> ChangeEvent:
        """One Kafka record -> ChangeEvent. Raises a DecodeError subclass naming the record and the reason."""
        try:
            header_dict = header_map(headers)
            key_dict = self.decode_key(key)
            if value is None:
                return tombstone(topic, key_dict, header_dict, partition, offset)
            data = value.encode() if value.__class__ is str else value
            compiled, payload = self._document(data, exact=False)
            if payload is None:
                return tombstone(topic, key_dict, header_dict, partition, offset)
            try:
                return compiled.codec.event(payload, topic=topic, key=key_dict, headers=header_dict,
                                            partition=partition, offset=offset)
            except InexactNumber:
                compiled.exact_numbers = True
                compiled, payload = self._document(data, exact=True)
                return compiled.codec.event(payload, topic=topic, key=key_dict, headers=header_dict,
                                            partition=partition, offset=offset)
        except DecodeError as exc:
            raise located(exc, topic, partition, offset) from None

    def decode_key(self, key: bytes | str | None) -> dict[str, Any] | None:
        """A record key (`{schema, payload}` or plain JSON) as a dict of decoded values; None stays None."""
        if key is None:
            return None
        data = key.encode() if key.__class__ is str else key
        try:
            return self._key(data, exact=False)
        except InexactNumber:
            return self._key(data, exact=True)

    def key_headers(self, headers: Mapping[str, bytes | None]) -> dict[str, Any]:
        """The primary-key-change headers of a record, decoded: {"newkey": {...}} and/or {"oldkey": {...}}."""
        found = {}
        for header, label in PK_CHANGE_HEADERS.items():
            raw = headers.get(header)
            if raw is not None:
                found[label] = self.decode_key(raw)
        return found

    # ------------------------------------------------------------------------------- parsing

    def _key(self, data: bytes, exact: bool) -> dict[str, Any] | None:
        compiled, payload = self._document(data, exact=exact)
        if compiled.convert is not None and payload is not None:
            try:
                payload = compiled.convert(payload)
            except InexactNumber:
                compiled.exact_numbers = True
                raise
            except DecodeError as exc:
                raise type(exc)(f"key.{exc.reason}") from None
        if payload is not None and payload.__class__ is not dict:
            raise InvalidValue(f"key: expected a struct, got {payload!r:.80}")
        return payload

    def _document(self, data: bytes, *, exact: bool) -> tuple[_Compiled, Any]:
        """(compiled schema, payload) of one JSON document; the untyped entry when it has no schema."""
        if data.startswith(_SCHEMA_PREFIX) and data.endswith(b"}"):
            cut = data.find(_PAYLOAD_SEPARATOR, len(_SCHEMA_PREFIX))
            if cut > 0:
                schema_text = data[len(_SCHEMA_PREFIX):cut]
                compiled = self._schemas.get(schema_text) or self._compile_text(schema_text)
                # None: the cut was inside the schema (a key named "payload"); the general path sorts it out
                if compiled is not None:
                    payload_text = memoryview(data)[cut + len(_PAYLOAD_SEPARATOR):-1]
                    return compiled, _loads(payload_text, exact or compiled.exact_numbers)
        document = _loads(data, exact)
        if document.__class__ is dict and document.keys() == {"schema", "payload"}:
            if document["schema"] is None:
                return self._untyped, document["payload"]
            text = orjson.dumps(document["schema"], option=orjson.OPT_SORT_KEYS)
            compiled = self._schemas.get(text) or self._compile(text, document["schema"])
            if compiled.exact_numbers and not exact:
                return self._document(data, exact=True)
            return compiled, document["payload"]
        return self._untyped, document

    def _compile_text(self, schema_text: bytes) -> _Compiled | None:
        try:
            schema = orjson.loads(schema_text)
        except orjson.JSONDecodeError:
            return None
        return self._compile(schema_text, schema)

    def _compile(self, cache_key: bytes, schema: Any) -> _Compiled:
        convert = compile_connect_schema(schema, placeholder=self._placeholder)
        compiled = _Compiled(convert, EnvelopeCodec(convert))
        if len(self._schemas) >= self._max_cached:
            self._schemas.clear()
        self._schemas[bytes(cache_key)] = compiled
        return compiled


def _loads(text: bytes | memoryview, exact: bool) -> Any:
    """Parse JSON; `exact` keeps every number exact (Decimal for non-integers, Python ints of any size)."""
    try:
        if exact:
            return json.loads(bytes(text), parse_float=Decimal)
        return orjson.loads(text)
    except (orjson.JSONDecodeError, ValueError) as exc:
        raise InvalidJson(f"not valid JSON: {exc}") from None
