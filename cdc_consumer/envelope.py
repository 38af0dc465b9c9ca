"""Debezium's change envelope -> `ChangeEvent` (pure): the record semantics both wire decoders share.

The wire decoders (`decoder.Decoder` for JSON, `avro.AvroDecoder`) read bytes and convert values with the
converters of `debezium.py`; they hand the converted payload to `EnvelopeCodec`, which interprets it:
`op`, `before`/`after`, the `source` block, the transaction block, and the BEGIN/END records of the
transaction-metadata topic. A null value is Kafka's tombstone (`tombstone_event`). Nothing here reads
bytes or calls back into a decoder: the record's path runs wire decoder -> envelope -> event.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from types import ModuleType
from typing import Any, Protocol

from cdc_consumer.debezium import Converter, StructConverter, brief
from cdc_consumer.errors import DecodeError, InvalidValue
from cdc_consumer.events import UNAVAILABLE, ChangeEvent, Op, RecordContext, Snapshot, Source


class ChangeDecoder(Protocol):
    """What `cdc consume`, `cdc decode`, `cdc dlq` and `cdc alerts` need of a wire decoder."""

    def decode_record(self, record: RecordContext, value: bytes | str | None) -> ChangeEvent:
        """One Kafka record -> its event; raises a DecodeError naming the record, nothing else for bad input."""
        ...

    def decode(self, topic: str, key: bytes | str | None, value: bytes | str | None, headers: Any = None,
               partition: int | None = None, offset: int | None = None) -> ChangeEvent:
        """decode_record of a record given as loose values (files, tests)."""
        ...

    def decode_key(self, key: bytes | str | None) -> dict[str, Any] | None: ...

    def key_headers(self, headers: Mapping[str, bytes | None]) -> dict[str, Any]:
        """The primary-key-change headers, decoded: {"newkey": {...}} and/or {"oldkey": {...}}."""
        ...


def tombstone_event(record: RecordContext, key: dict[str, Any] | None,
                    headers: Mapping[str, bytes | None]) -> ChangeEvent:
    """A null value: Kafka compaction's delete marker for `key`."""
    return ChangeEvent(topic=record.topic, partition=record.partition, offset=record.offset, op=None, key=key,
                       before=None, after=None, source=None, headers=headers, tombstone=True)


def at_record(exc: DecodeError, record: RecordContext) -> DecodeError:
    """The same decode error, naming the record it happened in (raise it `from None`)."""
    return type(exc)(exc.reason, topic=record.topic, partition=record.partition, offset=record.offset)


def native_event_types(module: ModuleType | None) -> tuple | None:
    """What a C extension's event() needs to build events itself, or None when events.py's dataclasses no
    longer have exactly the fields it sets (then EnvelopeCodec builds every event)."""
    if module is None:
        return None
    for cls, names in ((ChangeEvent, module.EVENT_ATTRIBUTES), (Source, module.SOURCE_ATTRIBUTES)):
        if tuple(f.name for f in dataclasses.fields(cls)) != names or hasattr(cls, "__post_init__"):
            return None
    return ChangeEvent, Source, OPS_BY_WIRE, SNAPSHOTS_BY_WIRE


def untyped_row(placeholder: str) -> Converter:
    """Rows without a schema (schemas.enable=false) pass through; only the TOAST placeholder is replaced."""
    def convert(row: Any) -> Any:
        if row.__class__ is dict and placeholder in row.values():
            return {name: UNAVAILABLE if value == placeholder else value for name, value in row.items()}
        return row
    return convert


# `op` and `source.snapshot` as they appear on the wire -> their enums (the C extensions get these too).
OPS_BY_WIRE = {op.value: op for op in Op}
# Debezium < 1.6 sent a boolean; since then a string enum ("false" while streaming).
SNAPSHOTS_BY_WIRE: dict[Any, Snapshot] = {s.value: s for s in Snapshot}
SNAPSHOTS_BY_WIRE.update({True: Snapshot.TRUE, False: Snapshot.FALSE})


def source_from(raw: Any) -> Source | None:
    """The envelope's `source` block (its fields are plain Connect types: checked, no converters needed)."""
    if raw is None:
        return None
    if raw.__class__ is not dict:
        raise InvalidValue(f"source: expected a struct, got {raw!r:.80}")
    get = raw.get
    snapshot = get("snapshot")
    if snapshot is not None:
        snapshot = _enum_value(SNAPSHOTS_BY_WIRE, snapshot, "source.snapshot")
    lsn, tx_id = _optional(raw, "lsn", int), _optional(raw, "txId", int)
    db, schema, table = _optional(raw, "db", str), _optional(raw, "schema", str), _optional(raw, "table", str)
    return Source(ts_us=_ts_us(raw, "source."), lsn=lsn, tx_id=tx_id, snapshot=snapshot, db=db, schema=schema,
                  table=table, sequence=_optional(raw, "sequence", str))


_INT64 = range(-(1 << 63), 1 << 63)


def _optional(block: dict[str, Any], name: str, cls: type) -> Any:
    """A plain source field: None, or exactly `cls` (an int within int64)."""
    value = block.get(name)
    if value is None or (value.__class__ is cls and (cls is not int or value in _INT64)):
        return value
    raise InvalidValue(f"source.{name}: expected {'an int64' if cls is int else 'a string'}, got {brief(value)}")


def _ts_us(block: dict[str, Any], where: str = "") -> int | None:
    """`ts_us`, or `ts_ms` in microseconds (Debezium before 2.6 sent milliseconds only); int64 or None."""
    ts_us = block.get("ts_us")
    if ts_us is None:
        ts_ms = block.get("ts_ms")
        if ts_ms is None:
            return None
        if ts_ms.__class__ is not int or ts_ms not in _INT64:  # e.g. a datetime, when a schema typed it Timestamp
            raise InvalidValue(f"{where}ts_ms: expected epoch milliseconds, got {brief(ts_ms)}")
        return ts_ms * 1000
    if ts_us.__class__ is not int or ts_us not in _INT64:
        raise InvalidValue(f"{where}ts_us: expected epoch microseconds, got {brief(ts_us)}")
    return ts_us


def _enum_value(members: Mapping[Any, Any], wire: Any, what: str) -> Any:
    try:
        return members[wire]
    except (KeyError, TypeError):
        raise InvalidValue(f"{what}: unknown value {brief(wire)}") from None


class EnvelopeCodec:
    """One compiled value schema: turns its payload (already parsed from JSON or Avro) into a ChangeEvent.

    `record` converts a whole payload that is not a change envelope: the BEGIN/END records of the
    transaction-metadata topic.
    """

    __slots__ = ("_after", "_before", "_record", "_typed")

    def __init__(self, record: Converter | None, *, typed: bool = True,
                 before: Converter | None = None, after: Converter | None = None) -> None:
        if isinstance(record, StructConverter):
            before = before or record.field_converter("before")
            after = after or record.field_converter("after")
        self._record, self._before, self._after, self._typed = record, before, after, typed

    @classmethod
    def untyped(cls, placeholder: str) -> EnvelopeCodec:
        rows = untyped_row(placeholder)
        return cls(None, typed=False, before=rows, after=rows)

    def event(self, payload: Any, record: RecordContext, key: dict[str, Any] | None,
              headers: Mapping[str, bytes | None]) -> ChangeEvent:
        """The event of a parsed payload; `key` and `headers` are the record's, decoded."""
        if payload.__class__ is not dict:
            raise InvalidValue(f"value: expected a struct, got {payload!r:.80}")
        get = payload.get
        op = get("op")
        if op is None:
            if "status" in payload:  # BEGIN/END on <prefix>.transaction
                return self._transaction_event(payload, record, key, headers)
            raise InvalidValue("value: not a Debezium change event (no 'op' and no transaction 'status')")
        return ChangeEvent(topic=record.topic, partition=record.partition, offset=record.offset,
                           op=_enum_value(OPS_BY_WIRE, op, "op"), key=key,
                           before=self._row("before", self._before, get("before")),
                           after=self._row("after", self._after, get("after")),
                           source=source_from(get("source")), headers=headers,
                           tx_block=get("transaction"), typed=self._typed, ts_us=_ts_us(payload))

    @staticmethod
    def _row(part: str, convert: Converter | None, row: Any) -> dict[str, Any] | None:
        if row is None or convert is None:
            return row
        try:
            return convert(row)
        except DecodeError as exc:
            raise type(exc)(f"{part}.{exc.reason}") from None

    def _transaction_event(self, payload: dict[str, Any], record: RecordContext, key: dict[str, Any] | None,
                           headers: Mapping[str, bytes | None]) -> ChangeEvent:
        return ChangeEvent(topic=record.topic, partition=record.partition, offset=record.offset, op=None, key=key,
                           before=None,
                           after=None, source=None, headers=headers,
                           transaction=self._row("transaction", self._record, payload), typed=self._typed,
                           ts_us=_ts_us(payload))


def header_map(headers: Any) -> dict[str, bytes | None]:
    """confluent-kafka's [(name, bytes), ...] (or a mapping, or None) as {name: bytes}; last one wins.

    Names must be str and values bytes, str (encoded as UTF-8) or None; anything else is InvalidValue."""
    if not headers:
        return {}
    try:
        items = headers.items() if isinstance(headers, Mapping) else headers
        found = {name: value.encode() if value.__class__ is str else value for name, value in items}
    except (TypeError, ValueError, UnicodeError):
        raise InvalidValue(f"headers: expected (name, value) pairs, got {brief(headers)}") from None
    for name, value in found.items():
        if name.__class__ is not str or not (value is None or value.__class__ is bytes):
            raise InvalidValue(f"headers: {brief(name)} is not a str name with bytes or None")
    return found
