"""Typed change events: what the decoder produces and the mapping/sink consume.

The decoder turns one Kafka record into one `ChangeEvent`. Row values are plain Python values:
`Decimal` for every Connect Decimal / VariableScaleDecimal (exact), `datetime` (tz-aware UTC) for
timestamps, `date`, `time`, `timedelta`, `bytes`, `uuid.UUID`, `str`, `int`, `float`, `bool`, lists,
dicts, `None` for SQL NULL, and `UNAVAILABLE` for a TOASTed column Debezium could not read.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


class _Unavailable:
    """Debezium's `__debezium_unavailable_value`: the column kept its old value; never write it."""

    _instance: _Unavailable | None = None
    TEXT = "__debezium_unavailable_value"

    def __new__(cls) -> _Unavailable:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNAVAILABLE"

    def __bool__(self) -> bool:
        return False

    def __reduce__(self):
        return (_Unavailable, ())


UNAVAILABLE = _Unavailable()


class Snapshot(str, enum.Enum):
    """`source.snapshot` of a Debezium event (a string enum on the wire, `"false"` while streaming)."""

    TRUE = "true"
    FIRST = "first"
    FIRST_IN_DATA_COLLECTION = "first_in_data_collection"
    LAST_IN_DATA_COLLECTION = "last_in_data_collection"
    LAST = "last"
    FALSE = "false"
    INCREMENTAL = "incremental"


class Op(str, enum.Enum):
    READ = "r"
    CREATE = "c"
    UPDATE = "u"
    DELETE = "d"
    TRUNCATE = "t"


@dataclass(frozen=True, slots=True)
class Source:
    ts_us: int | None  # commit time (streaming) or snapshot time, microseconds since epoch
    lsn: int | None
    tx_id: int | None
    snapshot: Snapshot | None
    db: str | None
    schema: str | None
    table: str | None
    sequence: str | None = None  # raw `"[lastCommitLsn, currentLsn]"` JSON text


@dataclass(slots=True)
class ChangeEvent:
    topic: str
    partition: int | None
    offset: int | None
    op: Op | None  # None for tombstones and transaction-metadata records
    key: dict[str, Any] | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    source: Source | None
    headers: Mapping[str, bytes | None] = field(default_factory=dict)
    tombstone: bool = False
    # Transaction metadata record (`<prefix>.transaction` topic): the BEGIN/END payload as a dict.
    transaction: dict[str, Any] | None = None
    # Per-event transaction block (`provide.transaction.metadata=true`): {id,total_order,data_collection_order}.
    tx_block: dict[str, Any] | None = None
    # False when the record carried no schema (schemas.enable=false): decimals stay undecoded text/base64.
    typed: bool = True
    ts_us: int | None = None  # when Debezium processed the event (envelope ts_us)

    @property
    def is_transaction_marker(self) -> bool:
        return self.transaction is not None

    @property
    def table(self) -> str | None:
        """`schema.table` of the source row, e.g. `public.klines`."""
        if self.source is None or self.source.table is None:
            return None
        return f"{self.source.schema}.{self.source.table}" if self.source.schema else self.source.table


@dataclass(slots=True)
class RecordContext:
    """Where one Kafka record came from: built once per record (`of`) and handed, instead of loose values,
    to the decoder and the DLQ. `headers` and `key` are as the Kafka client gave them (undecoded).

    Treat it as immutable (derive another with `dataclasses.replace`). It is not `frozen=True` on purpose:
    a frozen dataclass sets each field through `object.__setattr__`, and building one cost 1.02 µs against
    0.23 µs for this one (timeit, 6 fields), once per record on the hot path — about 1/7 of an Avro decode."""

    topic: str
    partition: int | None = None
    offset: int | None = None
    timestamp_ms: int | None = None  # the record's Kafka timestamp (CreateTime or LogAppendTime), if any
    headers: Any = None  # confluent-kafka's [(name, bytes)], a mapping, or None
    key: bytes | str | None = None

    @classmethod
    def of(cls, message: Any) -> RecordContext:
        """The context of a confluent-kafka `Message`."""
        kind, timestamp = message.timestamp()
        return cls(message.topic(), message.partition(), message.offset(), timestamp if kind else None,
                   message.headers(), message.key())

