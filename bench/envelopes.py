"""Real Debezium records from ../shared/fixtures/debezium and streams generated from them.

`fixture_records()` gives the captured records byte for byte (with their captured headers).
`ticker_stream()` / `kline_stream()` vary the keys and values of a captured envelope (same schema
and layout, compact JSON like JsonConverter writes) and return the source rows they encode, so a
test or benchmark can check Cassandra against them.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import orjson

FIXTURE_DIR = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "debezium"
MAIN_FILE = "pg_precise_default.ndjson"


@dataclass(frozen=True)
class KafkaRecord:
    source_topic: str  # the topic Debezium wrote it to (`crypto.public.<table>`)
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()


def fixture_dir() -> Path:
    for candidate in (FIXTURE_DIR, Path("/work/shared/fixtures/debezium")):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("shared/fixtures/debezium not found beside the repository")


def fixture_records(name: str = MAIN_FILE) -> list[KafkaRecord]:
    """Every record of a fixture file, with its captured headers when a `.headers.ndjson` exists."""
    folder = fixture_dir()
    lines = [orjson.loads(line) for line in (folder / name).read_bytes().splitlines() if line.strip()]
    headers_file = folder / name.replace(".ndjson", ".headers.ndjson")
    headers: dict[int, tuple] = {}
    if headers_file.exists():
        for line in headers_file.read_bytes().splitlines():
            entry = orjson.loads(line)
            headers[entry["line"]] = tuple((h, v.encode()) for h, v in entry["headers"])
    return [KafkaRecord(line["topic"], _bytes(line["key"]), _bytes(line["value"]), headers.get(number, ()))
            for number, line in enumerate(lines, start=1)]


def _bytes(text: str | None) -> bytes | None:
    return None if text is None else text.encode()


def unscaled(value: Decimal, scale: int) -> int:
    """The integer n with value == n * 10**-scale, exactly (ValueError if value has more decimals)."""
    sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int), f"{value} is not finite"
    shift = exponent + scale
    if shift < 0 and any(digits[shift:]):
        raise ValueError(f"{value} has more than {scale} decimals")
    magnitude = int("".join(map(str, digits)) or "0")
    magnitude = magnitude * 10 ** shift if shift >= 0 else magnitude // 10 ** -shift
    return -magnitude if sign else magnitude


def with_scale(value: Decimal, scale: int) -> Decimal:
    """`value` as PostgreSQL numeric(p, scale) stores it (built exactly, no context rounding)."""
    return Decimal(f"{unscaled(value, scale)}e-{scale}")


def encode_decimal(value: Decimal, scale: int) -> str:
    """Debezium's Connect Decimal: base64 of the big-endian two's-complement unscaled integer."""
    number = unscaled(value, scale)
    magnitude = number if number >= 0 else ~number  # minimal length, like BigInteger.toByteArray
    return base64.b64encode(number.to_bytes(magnitude.bit_length() // 8 + 1, "big", signed=True)).decode()


def iso_us(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _template(table: str) -> tuple[dict, dict]:
    for record in fixture_records():
        if record.source_topic.endswith(f".{table}") and record.key and record.value:
            value = orjson.loads(record.value)
            if value["payload"]["op"] in ("r", "c"):
                return orjson.loads(record.key), value
    raise LookupError(f"no create/read record of {table} in the fixtures")


def _decimal_scales(value_doc: dict) -> dict[str, int]:
    after = next(f for f in value_doc["schema"]["fields"] if f["field"] == "after")
    return {f["field"]: int(f["parameters"]["scale"]) for f in after["fields"]
            if f.get("name") == "org.apache.kafka.connect.data.Decimal"}


@dataclass
class Stream:
    records: list[tuple[bytes, bytes]]  # (key, value)
    rows: dict[tuple, dict]  # source primary key -> final source row (Decimal/datetime values)


def _stream(table: str, key_columns: tuple[str, ...], rows: list[dict], start_ts_us: int | None) -> Stream:
    key_doc, value_doc = _template(table)
    scales = _decimal_scales(value_doc)
    ts_us = start_ts_us if start_ts_us is not None else time.time_ns() // 1000
    records, final = [], {}
    payload = value_doc["payload"]
    for index, row in enumerate(rows):
        row = {c: with_scale(v, scales[c]) if c in scales and v is not None else v for c, v in row.items()}
        wire = {c: (encode_decimal(v, scales[c]) if c in scales and v is not None else
                    iso_us(v) if isinstance(v, datetime) else v) for c, v in row.items()}
        key_doc["payload"] = {c: wire[c] for c in key_columns}
        payload["after"] = {**payload["after"], **wire}
        payload["op"] = "c"
        source = payload["source"]
        source.update(snapshot="false", ts_us=ts_us + index, ts_ms=(ts_us + index) // 1000,
                      ts_ns=(ts_us + index) * 1000, lsn=1_000_000 + index, txId=10_000 + index)
        records.append((orjson.dumps(key_doc), orjson.dumps(value_doc)))
        final[tuple(row[c] for c in key_columns)] = row
    return Stream(records, final)


def ticker_stream(count: int, *, symbols: int = 20, start_ts_us: int | None = None,
                  start: datetime = datetime(2024, 1, 1, tzinfo=UTC)) -> Stream:
    """`count` ticker_24h creates: `symbols` symbols, one event_time per second each."""
    rows = []
    for i in range(count):
        price = Decimal(f"{40000 + i % 997}.{i % 100_000_000:08d}")
        rows.append({"symbol": f"SYM{i % symbols:04d}", "event_time": start + timedelta(seconds=i // symbols),
                     "price_change": Decimal(f"{i % 1000}e-2") - 5, "price_change_percent": Decimal("-1.2345"),
                     "last_price": price, "high_price": price + 10, "low_price": price - 10,
                     "volume": Decimal(f"{i}e-8") + 12345, "quote_volume": Decimal("533452123.12345678"),
                     "trade_count": i})
    return _stream("ticker_24h", ("symbol", "event_time"), rows, start_ts_us)


def ticker_changes(rows: list[dict], *, start_ts_us: int | None = None) -> Stream:
    """ticker_24h creates of the given rows (symbol, event_time, last_price, ...; other columns from the
    captured envelope)."""
    return _stream("ticker_24h", ("symbol", "event_time"), rows, start_ts_us)


def kline_stream(count: int, *, symbols: int = 20, start_ts_us: int | None = None,
                 start: datetime = datetime(2024, 1, 1, tzinfo=UTC)) -> Stream:
    """`count` 1m kline creates for `symbols` symbols."""
    rows = []
    for i in range(count):
        open_time = start + timedelta(minutes=i // symbols)
        price = Decimal(f"{42000 + i % 991}.{i % 100_000_000:08d}")
        rows.append({"symbol": f"SYM{i % symbols:04d}", "interval": "1m", "open_time": open_time,
                     "close_time": open_time + timedelta(seconds=59, milliseconds=999), "open": price,
                     "high": price + 1, "low": price - 1, "close": price + Decimal("0.5"),
                     "volume": Decimal(f"{i}e-8"), "number_of_trades": i % 100_000})
    return _stream("klines", ("symbol", "interval", "open_time"), rows, start_ts_us)
