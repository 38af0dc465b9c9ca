"""Benchmark: decoding Debezium ticker_24h / klines envelopes, JSON and Avro, on one core.

Targets (issue 3): >= 50,000 events/s JSON with schemas, >= 150,000 events/s Avro, and JSON decode time
<= 1.5x the standard library's json.loads of the same key and value bytes, measured in the same run.

JSON is measured two ways: `Decoder.decode` (the C extension `_json_native` converting orjson's parse,
`json_events_per_s`) and the same decoder on its Python path (`Decoder(native=False)`, what runs when the
extension is not built), each also as a ratio to the standard library's json.loads.

The events are the captured envelopes (bench/envelopes.py: same schema and layout as Debezium wrote
them, values varied per event), alternating ticker and kline. The Avro events are the same rows encoded
with the captured AvroConverter schemas (pg_avro_confluent.schemas.json) in Confluent wire format. Each
figure is the best of several interleaved rounds, so a busy machine skews the ratio as little as possible.
Avro is measured three ways: `AvroDecoder.decode` (the C extension, `avro_events_per_s`), the same decoder on
its fastavro path (`AvroDecoder(native=False)`, what runs when the extension is not built), and fastavro's
schemaless_reader alone (no Connect semantics), which bounds any decoder built on fastavro.

    .venv/bin/python bench/bench_decoder.py [--events 20000] [--rounds 5] [--cpu N] [--json-out FILE]
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path

import fastavro
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.envelopes import fixture_dir, kline_stream, ticker_stream
from cdc_consumer.avro import AvroDecoder, without_logical_types
from cdc_consumer.decoder import Decoder
from cdc_consumer.schema_registry import SchemaFile

TARGETS = {"decoder.json_events_per_s": (">=", 50_000), "decoder.avro_events_per_s": (">=", 150_000),
           "decoder.json_vs_stdlib_ratio": ("<=", 1.5)}
TOPICS = {"ticker_24h": "cdc.public.ticker_24h", "klines": "cdc.public.klines"}
# the AvroConverter schema ids of the captured tables (pg_avro_confluent.schemas.json "subjects")
AVRO_SCHEMA_IDS = {"ticker_24h": (1, 2), "klines": (3, 4)}

Record = tuple[str, bytes, bytes]  # topic, key, value


def json_records(events: int) -> tuple[list[Record], dict]:
    """`events` JSON records, ticker and kline alternating, and the source rows they encode."""
    half = events // 2
    tickers, klines = ticker_stream(half), kline_stream(events - half)
    records: list[Record] = []
    for ticker, kline in zip(tickers.records, klines.records):
        records.append((TOPICS["ticker_24h"], *ticker))
        records.append((TOPICS["klines"], *kline))
    return records, {**tickers.rows, **klines.rows}


def avro_records(json_side: list[Record]) -> list[Record]:
    """The same events in Confluent Avro wire format, written with the captured AvroConverter schemas."""
    schemas = json.loads((fixture_dir() / "pg_avro_confluent.schemas.json").read_text())["schemas_by_id"]
    parsed = {int(sid): fastavro.parse_schema(without_logical_types(s)) for sid, s in schemas.items()}
    out = []
    for topic, key, value in json_side:
        key_id, value_id = AVRO_SCHEMA_IDS[topic.rsplit(".", 1)[1]]
        key_datum = orjson.loads(key)["payload"]
        value_datum = orjson.loads(value)["payload"]
        decimals = _decimal_columns(schemas[str(value_id)])
        value_datum["after"] = {c: base64.b64decode(v) if c in decimals and v is not None else v
                                for c, v in value_datum["after"].items()}
        out.append((topic, _wire(key_id, parsed[key_id], key_datum), _wire(value_id, parsed[value_id], value_datum)))
    return out


def _decimal_columns(envelope_schema: dict) -> set[str]:
    value_record = next(t for t in envelope_schema["fields"][0]["type"] if t != "null")
    return {f["name"] for f in value_record["fields"]
            if any(isinstance(t, dict) and t.get("connect.name") == "org.apache.kafka.connect.data.Decimal"
                   for t in (f["type"] if isinstance(f["type"], list) else [f["type"]]))}


def _wire(schema_id: int, schema, datum) -> bytes:
    body = io.BytesIO()
    fastavro.schemaless_writer(body, schema, datum)
    return b"\x00" + struct.pack(">I", schema_id) + body.getvalue()


def best_seconds(candidates: dict[str, Callable[[], None]], rounds: int) -> dict[str, float]:
    """Best wall time of each candidate over `rounds`, the candidates interleaved round by round."""
    best = {name: float("inf") for name in candidates}
    for _ in range(rounds):
        for name, run in candidates.items():
            started = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - started)
    return best


def check_rows(decoder, records: list[Record], rows: dict) -> None:
    """Every decoded event equals the source row it encodes (outside the timing)."""
    for topic, key, value in records:
        after = decoder.decode(topic, key, value).after
        key_columns = ("symbol", "event_time") if topic.endswith("ticker_24h") else ("symbol", "interval", "open_time")
        expected = rows[tuple(after[c] for c in key_columns)]
        assert all(after[c] == v for c, v in expected.items()), (topic, after, expected)


def measure(events: int, rounds: int) -> dict[str, float]:
    json_side, rows = json_records(events)
    avro_side = avro_records(json_side)
    json_decoder = Decoder()
    json_python_decoder = Decoder(native=False)
    if not json_decoder.native:
        print("warning: the C extension is not built; decoder.json_events_per_s is the Python path", file=sys.stderr)
    avro_decoder = AvroDecoder(SchemaFile(fixture_dir() / "pg_avro_confluent.schemas.json"))
    fastavro_decoder = AvroDecoder(SchemaFile(fixture_dir() / "pg_avro_confluent.schemas.json"), native=False)
    if not avro_decoder.native:
        print("warning: the C extension is not built; decoder.avro_events_per_s is the fastavro path", file=sys.stderr)
    check_rows(json_decoder, json_side[-1000:], rows)
    check_rows(json_python_decoder, json_side[-1000:], rows)
    check_rows(avro_decoder, avro_side[-1000:], rows)
    check_rows(fastavro_decoder, avro_side[-1000:], rows)

    schemas = json.loads((fixture_dir() / "pg_avro_confluent.schemas.json").read_text())["schemas_by_id"]
    readers = {int(sid): fastavro.parse_schema(without_logical_types(s)) for sid, s in schemas.items()}

    def stdlib() -> None:
        loads = json.loads
        for _, key, value in json_side:
            loads(key), loads(value)

    def decode_all(decoder: Decoder | AvroDecoder, records: list[Record]) -> Callable[[], None]:
        def run() -> None:
            decode = decoder.decode
            for topic, key, value in records:
                decode(topic, key, value)
        return run

    def fastavro_only() -> None:
        read, unpack = fastavro.schemaless_reader, struct.Struct(">I").unpack_from
        for _, key, value in avro_side:
            read(io.BytesIO(memoryview(key)[5:]), readers[unpack(key, 1)[0]], None)
            read(io.BytesIO(memoryview(value)[5:]), readers[unpack(value, 1)[0]], None)

    seconds = best_seconds({"stdlib": stdlib, "json": decode_all(json_decoder, json_side),
                            "json_python_path": decode_all(json_python_decoder, json_side),
                            "avro": decode_all(avro_decoder, avro_side),
                            "avro_fastavro_path": decode_all(fastavro_decoder, avro_side), "fastavro": fastavro_only},
                           rounds)
    count = len(json_side)
    return {"decoder.json_events_per_s": count / seconds["json"],
            "decoder.json_python_path_events_per_s": count / seconds["json_python_path"],
            "decoder.avro_events_per_s": count / seconds["avro"],
            "decoder.avro_fastavro_path_events_per_s": count / seconds["avro_fastavro_path"],
            "decoder.json_vs_stdlib_ratio": seconds["json"] / seconds["stdlib"],
            "decoder.json_python_path_vs_stdlib_ratio": seconds["json_python_path"] / seconds["stdlib"],
            "decoder.stdlib_json_loads_events_per_s": count / seconds["stdlib"],
            "decoder.fastavro_read_only_events_per_s": count / seconds["fastavro"],
            "decoder.events": count, "decoder.rounds": rounds}


def report(results: dict[str, float]) -> bool:
    ok = True
    print(f"{int(results['decoder.events'])} events (ticker_24h + klines envelopes), best of "
          f"{int(results['decoder.rounds'])} rounds, one core")
    for name, value in results.items():
        if name in ("decoder.events", "decoder.rounds"):
            continue
        target = TARGETS.get(name)
        verdict = ""
        if target is not None:
            op, bound = target
            met = value >= bound if op == ">=" else value <= bound
            ok &= met
            verdict = f"  target {op} {bound:,}: {'met' if met else 'MISSED'}"
        shown = f"{value:,.2f}" if value < 100 else f"{value:,.0f}"
        print(f"  {name:42s} {shown:>12s}{verdict}")
    json_speedup = results["decoder.json_events_per_s"] / results["decoder.json_python_path_events_per_s"]
    print(f"  JSON decode runs at {json_speedup:.1f}x its own Python path.")
    avro_share = results["decoder.avro_events_per_s"] / results["decoder.fastavro_read_only_events_per_s"]
    speedup = results["decoder.avro_events_per_s"] / results["decoder.avro_fastavro_path_events_per_s"]
    print(f"  Avro decode runs at {avro_share:.0%} of fastavro's bare read rate on this machine, "
          f"{speedup:.1f}x its own fastavro path.")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cpu", type=int, default=None, help="pin the process to this CPU")
    parser.add_argument("--json-out", type=Path, default=None, help="also write the results as JSON")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    results = measure(args.events, args.rounds)
    met = report(results)
    if args.json_out is not None:
        args.json_out.write_text(json.dumps(results, indent=1) + "\n")
    return 0 if met or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())
