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
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import orjson

from cdc_consumer.debezium import (
    ChangeDecoder,
    Converter,
    EnvelopeCodec,
    InexactNumber,
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
from cdc_consumer.events import UNAVAILABLE, ChangeEvent, DecodeError

__all__ = ["ChangeDecoder", "Decoder", "InvalidJson", "InvalidValue", "SchemaError", "compile_connect_schema"]

_SCHEMA_PREFIX = b'{"schema":'
_PAYLOAD_SEPARATOR = b',"payload":'
PK_CHANGE_HEADERS = {"__debezium.newkey": "newkey", "__debezium.oldkey": "oldkey"}


class InvalidJson(DecodeError):
    """The key, value or a header is not valid JSON."""


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

    __slots__ = ("codec", "convert", "exact_numbers")

    def __init__(self, convert: Converter | None, codec: EnvelopeCodec) -> None:
        self.convert, self.codec, self.exact_numbers = convert, codec, False


class Decoder(ChangeDecoder):
    """Decodes Debezium JSON records (JsonConverter, schemas enabled or not). Not thread-safe (caches)."""

    def __init__(self, *, unavailable_placeholder: str = UNAVAILABLE.TEXT, max_cached_schemas: int = 1024) -> None:
        self._placeholder = unavailable_placeholder
        self._max_cached = max_cached_schemas
        # Schemas as they appear on the wire, by text length: a record that starts with a known schema text
        # followed by `,"payload":` needs neither a byte search nor a hash of its 5 KB schema.
        self._by_length: dict[int, list[tuple[bytes, _Compiled]]] = {}
        self._by_canonical: dict[bytes, _Compiled] = {}  # schemas met on the general path
        self._cached = 0
        self._untyped = _Compiled(None, EnvelopeCodec.untyped(unavailable_placeholder))

    # -------------------------------------------------------------------------------- public
    # decode(topic, key, value, headers, partition, offset) -> ChangeEvent comes from ChangeDecoder

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

    def _value_event(self, value: bytes | str, **record: Any) -> ChangeEvent | None:
        data = value.encode() if value.__class__ is str else value
        compiled, payload = self._document(data, exact=False)
        if payload is None:  # `{"schema": null, "payload": null}`
            return None
        try:
            return compiled.codec.event(payload, **record)
        except InexactNumber:  # decimal.format=NUMERIC: read this schema's records with exact numbers
            compiled.exact_numbers = True
            compiled, payload = self._document(data, exact=True)
            return compiled.codec.event(payload, **record)

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
            compiled = self._by_canonical.get(text)
            if compiled is None:
                compiled = self._by_canonical[text] = self._compile(document["schema"])
            if compiled.exact_numbers and not exact:
                return self._document(data, exact=True)
            return compiled, document["payload"]
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
        compiled = self._compile(schema)
        self._by_length.setdefault(len(text), []).insert(0, (text, compiled))
        return cut, compiled

    def _compile(self, schema: Any) -> _Compiled:
        if self._cached >= self._max_cached:  # a stream of ever-new schemas must not grow memory forever
            self._by_length.clear()
            self._by_canonical.clear()
            self._cached = 0
        self._cached += 1
        convert = compile_connect_schema(schema, placeholder=self._placeholder)
        return _Compiled(convert, EnvelopeCodec(convert))


def _loads(text: bytes | memoryview, exact: bool) -> Any:
    """Parse JSON; `exact` keeps every number exact (Decimal for non-integers, Python ints of any size)."""
    try:
        if exact:
            return json.loads(bytes(text), parse_float=Decimal)
        return orjson.loads(text)
    except (orjson.JSONDecodeError, ValueError) as exc:
        raise InvalidJson(f"not valid JSON: {exc}") from None
