"""Benchmark: the pipeline in Avro (Apicurio Registry, Confluent wire format) against JSON with schemas.

One run, both formats side by side on the running native stack, each through real Debezium:

  end to end   bench_e2e.measure(): a private pipeline per format, the same seeded writer at a fixed rate
               (default 2,000 changes/s); PostgreSQL commit -> row visible in Cassandra, p50/p99.
  wire bytes   the same run's tap: key + value bytes of every record on the klines and order_book topics,
               divided by the number of records (Kafka's own framing and compression not counted).
  consume      bench_consumer.run_consumer(): after the run, a fresh `cdc consume --format F` (new group,
               new keyspace) applies every record of that run's topics again; events/s from its metrics.

Figures are noisy on a shared machine; compare the two columns of one run, never across runs.

    .venv/bin/python bench/bench_avro.py [--rate 2000] [--seconds 15] [--json-out FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from confluent_kafka import Consumer, TopicPartition  # noqa: E402

from bench.bench_consumer import fresh_keyspace, run_consumer  # noqa: E402
from bench.bench_e2e import measure  # noqa: E402
from cdc_consumer.config import Settings  # noqa: E402
from tests.e2e.pipeline import Pipeline  # noqa: E402
from tests.support import unique_name  # noqa: E402

FORMATS = ("json", "avro")
TABLES = ("klines", "order_book")


def records_in(bootstrap: str, topics: list[str]) -> int:
    """Records on the topics now: the sum of (high - low) watermarks over their partitions."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": unique_name("count")})
    try:
        total = 0
        for topic in topics:
            for partition in consumer.list_topics(topic, timeout=10).topics[topic].partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
                total += high - low
        return total
    finally:
        consumer.close()


def consume_again(settings: Settings, fmt: str):
    """After a run: a fresh `cdc consume` applies all of that run's records into a new keyspace."""
    def run(pipeline: Pipeline, session) -> dict:
        topics = [pipeline.topic(t) for t in TABLES]
        events = records_in(settings.kafka_bootstrap, topics)
        keyspace = fresh_keyspace(session)
        try:
            regex = rf"^{pipeline.prefix}\.public\.({'|'.join(TABLES)})$"
            consumer = run_consumer(regex, keyspace, events, fmt)
        finally:
            session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}", timeout=120)
        return {"consume_events": events, "consume_events_per_s": round(consumer["events_per_s"])}
    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=2000, help="changes per second")
    parser.add_argument("--seconds", type=float, default=15, help="seconds of load per format")
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args()

    settings = Settings.from_env()
    runs = {fmt: measure(settings, fmt=fmt, rate=args.rate, seconds=args.seconds,
                         after_run=consume_again(settings, fmt)) for fmt in FORMATS}
    figures = ("wire_bytes_per_event", "consume_events_per_s", "p50_ms", "p99_ms")
    results = {f"format.{fmt}.{name}": runs[fmt][name] for fmt in FORMATS for name in figures}
    results |= {f"format.avro_to_json.{name}": round(runs["avro"][name] / runs["json"][name], 2) for name in figures}
    print(f"Avro (Apicurio, Confluent wire format) vs JSON with schemas, {args.seconds:g}s at {args.rate:g} "
          f"changes/s each; consume: every record of the run again ({runs['json']['consume_events']} / "
          f"{runs['avro']['consume_events']} events):")
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
