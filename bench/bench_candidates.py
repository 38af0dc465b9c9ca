"""Candidates for a faster `cdc consume`, side by side in one run on the bench_consumer workload.

Each candidate is the same `cdc consume` with other options or another Cassandra driver; they run one at a
time, interleaved, --rounds times each, every run into a fresh keyspace, and the median events/s is printed
with its ratio to the baseline (the defaults). Candidates:

  baseline          defaults (cassandra-driver, --max-batch-rows 25, --max-in-flight 32)
  scylla-driver     the scylla-driver fork (same `cassandra` import name, Cython-built), installed apart with
                    `pip install --no-deps --target DIR scylla-driver` and put first on PYTHONPATH
                    (DIR: $CDC_SCYLLA_DRIVER_DIR); skipped when DIR has no `cassandra` package
  batch-rows-50     fewer, larger requests: up to 50 rows of one partition per UNLOGGED batch
  in-flight-64      more requests in flight

    .venv/bin/python bench/bench_candidates.py [--events 20000] [--rounds 2] [--json-out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.bench_consumer import fresh_keyspace, produce, records, run_consumer
from cdc_consumer import cql_session, kafka_clients
from cdc_consumer.config import Settings
from tests.support import unique_name


def candidates() -> dict[str, tuple[dict | None, tuple[str, ...]]]:
    """name -> (environment or None for ours, extra `cdc consume` options)."""
    found: dict[str, tuple[dict | None, tuple[str, ...]]] = {
        "baseline": (None, ()), "batch-rows-50": (None, ("--max-batch-rows", "50")),
        "in-flight-64": (None, ("--max-in-flight", "64"))}
    scylla = os.environ.get("CDC_SCYLLA_DRIVER_DIR", "")
    if scylla and (Path(scylla) / "cassandra").is_dir():
        path = os.pathsep.join(p for p in (scylla, os.environ.get("PYTHONPATH", "")) if p)
        found["scylla-driver"] = ({**os.environ, "PYTHONPATH": path}, ())
    else:
        print("scylla-driver: skipped (set CDC_SCYLLA_DRIVER_DIR to a `pip install --target` directory of it)")
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args()

    settings = Settings.from_env()
    kafka = settings.kafka_client
    topic = unique_name("bench_candidates")
    produce(kafka, topic, 3, records(args.events))
    cluster, session = cql_session.connect(settings.cassandra)
    runs: dict[str, list[float]] = {name: [] for name in candidates()}
    try:
        for round_number in range(args.rounds):
            for name, (env, options) in candidates().items():
                keyspace = fresh_keyspace(session)
                try:
                    rate = run_consumer(topic, keyspace, args.events, env=env, options=options)["events_per_s"]
                finally:
                    session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}", timeout=120)
                runs[name].append(rate)
                print(f"  round {round_number + 1} {name:15} {rate:>9,.0f} events/s", flush=True)
    finally:
        cluster.shutdown()
        kafka_clients.admin(kafka).delete_topics([topic])
    baseline = statistics.median(runs["baseline"])
    results: dict[str, float] = {}
    for name, rates in runs.items():
        median = statistics.median(rates)
        results[f"candidates.{name}_events_per_s"] = round(median)
        results[f"candidates.{name}_ratio"] = round(median / baseline, 2)
        print(f"  {name:15} median {median:>9,.0f} events/s   {median / baseline:5.2f}x baseline")
    if args.json_out is not None:
        args.json_out.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
