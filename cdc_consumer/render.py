"""A ChangeEvent as a JSON-able dict (what `cdc decode` prints, and what a DLQ or log line can reuse).

Exact and unambiguous: decimals as plain strings (`format(d, "f")`: "-0.00000001", never "1E-8"),
timestamps as ISO-8601 UTC with microseconds and `Z`, dates `YYYY-MM-DD`, times `HH:MM:SS.ffffff`,
durations as ISO-8601 seconds (`PT37091106.500000S`), bytes as base64, UUIDs as text, non-finite
doubles as Debezium spells them ("NaN", "Infinity", "-Infinity"), the TOAST sentinel as its placeholder.
"""

from __future__ import annotations

import base64
import math
import uuid
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from cdc_consumer.events import UNAVAILABLE, ChangeEvent

_NON_FINITE = {math.inf: "Infinity", -math.inf: "-Infinity"}


def event_to_json(event: ChangeEvent) -> dict[str, Any]:
    """The event as plain JSON types: {"topic", "op", "key", "before", "after", "source", ...}."""
    doc: dict[str, Any] = {"topic": event.topic}
    if event.partition is not None:
        doc["partition"] = event.partition
    if event.offset is not None:
        doc["offset"] = event.offset
    doc["op"] = event.op.value if event.op is not None else None
    doc["key"] = to_jsonable(event.key)
    if event.tombstone:
        doc["tombstone"] = True
        return doc
    if event.transaction is not None:
        doc["tx"] = to_jsonable(event.transaction)
        return doc
    doc["before"] = to_jsonable(event.before)
    doc["after"] = to_jsonable(event.after)
    if event.source is not None:
        source = event.source
        doc["source"] = {"ts_us": source.ts_us, "lsn": source.lsn, "txId": source.tx_id,
                         "snapshot": source.snapshot.value if source.snapshot is not None else None,
                         "db": source.db, "schema": source.schema, "table": source.table}
    if event.tx_block is not None:
        doc["transaction"] = to_jsonable(event.tx_block)
    if not event.typed:
        doc["typed"] = False
    return doc


def to_jsonable(value: Any) -> Any:
    """One decoded value (recursively) as plain JSON types; see the module docstring for the spellings."""
    if value is None or value.__class__ in (str, int, bool):
        return value
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, Decimal):
        return format(value, "f") if value.is_finite() else str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        return _NON_FINITE.get(value, value)
    if isinstance(value, datetime):
        return _iso_utc(value)
    if isinstance(value, (date, time)):
        return value.isoformat()
    if isinstance(value, timedelta):
        return _iso_duration(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, uuid.UUID):
        return str(value)
    if value is UNAVAILABLE:
        return UNAVAILABLE.TEXT
    return str(value)


def _iso_utc(moment: datetime) -> str:
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.isoformat(timespec="microseconds") + "Z"


def _iso_duration(duration: timedelta) -> str:
    micros = (duration.days * 86_400 + duration.seconds) * 1_000_000 + duration.microseconds
    sign = "-" if micros < 0 else ""
    seconds, fraction = divmod(abs(micros), 1_000_000)
    return f"{sign}PT{seconds}.{fraction:06d}S"
