"""Benchmark: the pipeline in Avro (Apicurio Registry, Confluent wire format) against JSON with schemas.

One run, both formats side by side on the running native stack:

  end to end   bench_e2e.measure() per format: a private pipeline through real Debezium, the same seeded
               writer at a fixed rate; PostgreSQL commit -> row visible in Cassandra, p50/p99.
  wire bytes   the same runs' tap: key + value bytes of every record Debezium wrote on the klines and
               order_book topics, divided by the number of records (Kafka framing and compression not counted).
  consume      bench_consumer's method per format: the same generated ticker/kline events (bench_decoder's
               JSON envelopes, and the same rows in Avro with the captured AvroConverter schemas, registered
               in the stack's registry) pre-filled in a topic; one `cdc consume --format F` applies them all,
               events/s from its own metrics.

Figures are noisy on a shared machine; compare the two columns of one run, never across runs.

    .venv/bin/python bench/bench_avro.py [--rate 2000] [--seconds 15] [--events 30000] [--json-out FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import requests  # noqa: E402

from bench.bench_consumer import fresh_keyspace, produce, run_consumer  # noqa: E402
from bench.bench_decoder import avro_records, json_records  # noqa: E402
from bench.bench_e2e import measure  # noqa: E402
from bench.envelopes import fixture_dir  # noqa: E402
from cdc_consumer import cql_session, kafka_clients  # noqa: E402
from cdc_consumer.config import Settings  # noqa: E402
from tests.support import unique_name  # noqa: E402

FORMATS = ("json", "avro")
PARTITIONS = 3


def registered_ids(registry_url: str) -> dict[int, int]:
    """The captured AvroConverter schemas registered in the stack's registry: {fixture id: registry id}."""
    schemas = json.loads((fixture_dir() / "pg_avro_confluent.schemas.json").read_text())["schemas_by_id"]
    prefix = unique_name("bench_avro")
    ids = {}
    for fixture_id, schema in schemas.items():
        response = requests.post(f"{registry_url}/subjects/{prefix}-{fixture_id}/versions", timeout=10,
                                 headers={"Content-Type": "application/vnd.schemaregistry.v1+json"},
                                 data=json.dumps({"schema": schema if isinstance(schema, str) else json.dumps(schema)}))
        response.raise_for_status()
        ids[int(fixture_id)] = response.json()["id"]
    return ids


def reframed(data: bytes, ids: dict[int, int]) -> bytes:
    """Confluent-framed Avro with its fixture schema id replaced by the registry's id."""
    return data[:1] + ids[int.from_bytes(data[1:5], "big")].to_bytes(4, "big") + data[5:]


def consume_rates(settings: Settings, events: int) -> dict[str, float]:
    """`cdc consume` events/s per format on the same events, each pre-filled in a topic of its own."""
    kafka = settings.kafka_client
    json_side, _ = json_records(events)
    ids = registered_ids(settings.schema_registry_url)
    streams = {"json": [(key, value) for _, key, value in json_side],
               "avro": [(reframed(key, ids), reframed(value, ids)) for _, key, value in avro_records(json_side)]}
    cluster, session = cql_session.connect(settings.cassandra)
    rates = {}
    try:
        for fmt, stream in streams.items():
            topic = unique_name(f"bench_{fmt}")
            produce(kafka, topic, PARTITIONS, stream)
            keyspace = fresh_keyspace(session)
            try:
                rates[fmt] = run_consumer(topic, keyspace, len(stream), fmt)["events_per_s"]
            finally:
                session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}", timeout=120)
                kafka_clients.admin(kafka).delete_topics([topic])
    finally:
        cluster.shutdown()
    return rates


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=2000, help="changes per second of the end-to-end runs")
    parser.add_argument("--seconds", type=float, default=15, help="seconds of load per format")
    parser.add_argument("--events", type=int, default=30_000, help="events per format for `cdc consume`")
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args()

    settings = Settings.from_env()
    runs = {fmt: measure(settings, fmt=fmt, rate=args.rate, seconds=args.seconds) for fmt in FORMATS}
    for fmt, rate in consume_rates(settings, args.events).items():
        runs[fmt]["consume_events_per_s"] = round(rate)
    figures = ("wire_bytes_per_event", "consume_events_per_s", "p50_ms", "p99_ms")
    results = {f"format.{fmt}.{name}": runs[fmt][name] for fmt in FORMATS for name in figures}
    results |= {f"format.{fmt}.e2e_rate_changes_per_s": runs[fmt]["rate_changes_per_s"] for fmt in FORMATS}
    results |= {f"format.avro_to_json.{name}": round(runs["avro"][name] / runs["json"][name], 2) for name in figures}
    print(f"Avro (Apicurio, Confluent wire format) vs JSON with schemas, one run: end to end {args.seconds:g}s "
          f"at {args.rate:g} changes/s each (achieved json {runs['json']['rate_changes_per_s']}, "
          f"avro {runs['avro']['rate_changes_per_s']}); cdc consume on {args.events} events each")
    print(f"  {'figure':28} {'json':>10} {'avro':>10} {'avro/json':>10}")
    labels = {"wire_bytes_per_event": "bytes on the wire per event", "consume_events_per_s": "cdc consume events/s",
              "p50_ms": "commit -> Cassandra p50 ms", "p99_ms": "commit -> Cassandra p99 ms"}
    for name in figures:
        print(f"  {labels[name]:28} {runs['json'][name]:>10,} {runs['avro'][name]:>10,} "
              f"{results[f'format.avro_to_json.{name}']:>10}")
    if args.json_out is not None:
        args.json_out.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
