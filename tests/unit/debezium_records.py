"""The real Debezium captures in shared/fixtures/debezium, and records derived from them for the decoder tests.

Variants the fixtures only describe (JsonConverter decimal.format=NUMERIC, schemas.enable=false,
transaction metadata) are derived from the real records exactly as the README documents them.
"""

from __future__ import annotations

import base64
import json
import re
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

from tests.support import fixtures_dir

PRECISE = "pg_precise_default"
STRING_MODE = "pg_decimal_string"
AVRO = "pg_avro_confluent"


def debezium_dir() -> Path:
    return fixtures_dir() / "debezium"


@cache
def records(name: str) -> tuple[dict[str, Any], ...]:
    """The lines of `<name>.ndjson` as {"topic", "key", "value"} dicts (key/value: exact text or base64)."""
    with open(debezium_dir() / f"{name}.ndjson", encoding="utf-8") as lines:
        return tuple(json.loads(line) for line in lines)


@cache
def headers() -> tuple[list[tuple[str, bytes]], ...]:
    """Kafka headers of each line of the main capture, as confluent-kafka gives them: [(name, bytes)]."""
    with open(debezium_dir() / f"{PRECISE}.headers.ndjson", encoding="utf-8") as lines:
        return tuple([(name, value.encode()) for name, value in json.loads(line)["headers"]] for line in lines)


def avro_schemas_path() -> Path:
    return debezium_dir() / f"{AVRO}.schemas.json"


def avro_bytes(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text)


def value_doc(line: int) -> dict[str, Any]:
    """The parsed `{schema, payload}` value of a line (1-based, as in the README's event index)."""
    return json.loads(records(PRECISE)[line - 1]["value"])


def compact(doc: Any) -> bytes:
    """JSON as Jackson writes it: no spaces."""
    return json.dumps(doc, separators=(",", ":")).encode()


def decimal_fields(struct_schema: dict[str, Any]) -> dict[str, int]:
    """{field: scale} of the Connect Decimal fields of a struct schema."""
    return {f["field"]: int(f["parameters"]["scale"]) for f in struct_schema["fields"]
            if f.get("name") == "org.apache.kafka.connect.data.Decimal"}


def numeric_format_value(line: int) -> bytes:
    """A line as JsonConverter writes it with decimal.format=NUMERIC: decimals as JSON numbers.

    Jackson writes BigDecimal.toString(), which follows the same notation rules as Python's str(Decimal)
    ("-1E-8", "0E-8", "12345678901234.12345678").
    """
    doc = value_doc(line)
    after_schema = next(f for f in doc["schema"]["fields"] if f["field"] == "after")
    scales = decimal_fields(after_schema)
    row = doc["payload"]["after"]
    for field, scale in scales.items():
        if row[field] is not None:
            unscaled = int.from_bytes(base64.b64decode(row[field]), "big", signed=True)
            row[field] = f"@number:{Decimal(f'{unscaled}E-{scale}')}@"
    return re.sub(rb'"@number:([^@]+)@"', rb"\1", compact(doc))


def schemaless(text: str | None) -> bytes | None:
    """The same record with schemas.enable=false: only the payload."""
    return None if text is None else compact(json.loads(text)["payload"])


def minimal_twos_complement(unscaled: int) -> bytes:
    """Java BigInteger.toByteArray(): big-endian two's complement in the fewest bytes (what Debezium sends)."""
    bits = unscaled.bit_length() if unscaled >= 0 else (~unscaled).bit_length()
    return unscaled.to_bytes(bits // 8 + 1, "big", signed=True)


def transaction_record(status: str, tx_id: str, ts_ms: int, counts: dict[str, int] | None = None) -> tuple[bytes, bytes]:
    """(key, value) of a BEGIN/END record on `<prefix>.transaction`, as the README documents them."""
    key = {"schema": {"type": "struct", "optional": False, "name": "io.debezium.connector.common.TransactionMetadataKey",
                      "fields": [{"type": "string", "optional": False, "field": "id"}]},
           "payload": {"id": tx_id}}
    collection = {"type": "struct", "optional": False, "fields": [
        {"type": "string", "optional": False, "field": "data_collection"},
        {"type": "int64", "optional": False, "field": "event_count"}]}
    value = {"schema": {"type": "struct", "optional": False, "name": "io.debezium.connector.common.TransactionMetadataValue",
                        "version": 1, "fields": [
                            {"type": "string", "optional": False, "field": "status"},
                            {"type": "string", "optional": False, "field": "id"},
                            {"type": "int64", "optional": True, "field": "event_count"},
                            {"type": "array", "items": collection, "optional": True, "field": "data_collections"},
                            {"type": "int64", "optional": False, "field": "ts_ms"}]},
             "payload": {"status": status, "id": tx_id,
                         "event_count": sum(counts.values()) if counts else None,
                         "data_collections": [{"data_collection": c, "event_count": n} for c, n in counts.items()]
                         if counts else None,
                         "ts_ms": ts_ms}}
    return compact(key), compact(value)
