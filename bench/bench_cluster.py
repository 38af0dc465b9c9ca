"""Benchmark: the pipeline on a 3 Cassandra + 3 Kafka cluster (issue 13).

1. `cdc consume` events/s on the cluster (keyspace RF 3, writes at LOCAL_QUORUM, topic RF 3) beside the open
   single-node stack at consistency ONE (RF 1): the same generated ticker/kline records, rounds alternating
   so machine noise hits both alike; best round of each and their ratio.
2. End-to-end latency (PostgreSQL commit -> row visible in Cassandra, bench_e2e's markers) on the cluster
   while a Cassandra node is SIGKILLed 5 s into the run and started again 20 s later.

The cluster is the tests' (`tests/cluster/stack.py`: own state dir and ports), started here if needed and
stopped again if so; the open stack must be up (`make bench` starts it).

    .venv/bin/python bench/bench_cluster.py [--events 20000] [--rounds 2] [--rate 500] [--seconds 40] [--json-out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.bench_consumer import produce, records, run_consumer  # noqa: E402
from bench.bench_e2e import measure  # noqa: E402
from cdc_consumer import cql_session, kafka_clients, schema  # noqa: E402
from cdc_consumer.config import Settings  # noqa: E402
from tests.cluster.stack import ClusterStack  # noqa: E402
from tests.cluster.support import Fault  # noqa: E402
from tests.support import unique_name  # noqa: E402


def consumer_rate(env: dict[str, str], stream, events: int, partitions: int, *, single_replica: bool = False) -> float:
    """One `cdc consume` over a fresh topic and keyspace, replicated as `cdc init` would on that stack (or
    with one replica of each when `single_replica`)."""
    settings = Settings.from_env(env)
    kafka = settings.kafka_client
    topic = unique_name("bench_cluster")
    client = kafka_clients.admin(kafka)
    brokers = 1 if single_replica else len(client.list_topics(timeout=10).brokers)
    produce(kafka, topic, partitions, stream,
            replication_factor=kafka_clients.replication_for(brokers)[0])
    keyspace = unique_name("bench_cl")
    cluster, session = cql_session.connect(settings.cassandra)
    try:
        schema.apply_cql(session, keyspace, "{'class': 'NetworkTopologyStrategy', 'datacenter1': 1}"
                         if single_replica else None)  # default: NetworkTopologyStrategy, RF min(3, nodes)
        return run_consumer(topic, keyspace, events, env=env)["events_per_s"]
    finally:
        session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}", timeout=120)
        cluster.shutdown()
        client.delete_topics([topic])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--rate", type=float, default=500, help="end-to-end run: changes per second")
    parser.add_argument("--seconds", type=float, default=40, help="end-to-end run: seconds of writes")
    parser.add_argument("--baseline", choices=("single-node", "rf1-on-cluster"), default="single-node",
                        help="the ONE side: the open single-node stack (default), or, where none runs, RF 1 "
                             "keyspace and topic on the cluster itself (reported under other keys)")
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args()

    stack = ClusterStack()
    t0 = time.monotonic()
    cluster_env = stack.up()
    started = time.monotonic() - t0
    on_cluster = args.baseline == "rf1-on-cluster"
    single_env = {**(cluster_env if on_cluster else os.environ), "CDC_CASSANDRA_CONSISTENCY": "ONE"}
    cluster_env = {**cluster_env, "CDC_CASSANDRA_CONSISTENCY": "LOCAL_QUORUM"}
    saved = dict(os.environ)
    try:
        stream = records(args.events)
        rates: dict[str, list[float]] = {"single_one": [], "cluster_local_quorum": []}
        for _ in range(args.rounds):
            rates["single_one"].append(consumer_rate(single_env, stream, args.events, args.partitions,
                                                     single_replica=on_cluster))
            rates["cluster_local_quorum"].append(consumer_rate(cluster_env, stream, args.events, args.partitions))

        fault = Fault(stack, "cassandra-2")
        os.environ.clear()
        os.environ.update(cluster_env)  # the e2e helpers' `cdc` processes read os.environ
        run = measure(Settings.from_env(), rate=args.rate, seconds=args.seconds,
                      on_start=lambda: threading.Timer(5, fault.start).start())
        fault.finish()
    finally:
        os.environ.clear()
        os.environ.update(saved)
        stack.down()
    best = {name: max(values) for name, values in rates.items()}
    one_key = "cluster.rf1_on_cluster_one_events_per_s" if on_cluster else "cluster.single_node_one_events_per_s"
    results = {
        one_key: round(best["single_one"]),
        "cluster.three_nodes_local_quorum_events_per_s": round(best["cluster_local_quorum"]),
        "cluster.local_quorum_vs_one_ratio": round(best["cluster_local_quorum"] / best["single_one"], 3),
        "cluster.e2e_node_kill_p50_ms": run["p50_ms"],
        "cluster.e2e_node_kill_p99_ms": run["p99_ms"],
        "cluster.e2e_node_kill_max_ms": run["max_ms"],
        "cluster.e2e_rate_changes_per_s": run["rate_changes_per_s"],
        "cluster.stack_up_s": round(started, 1),
    }
    print(f"{args.events} events, {args.rounds} alternating rounds, one `cdc consume` each:")
    for name, values in rates.items():
        print(f"  {name:22} rounds: {', '.join(f'{v:,.0f}' for v in values)} events/s")
    print(f"end to end at {run['rate_changes_per_s']} changes/s for {args.seconds:.0f}s with {fault.describe()}: "
          f"p50 {run['p50_ms']} ms, p99 {run['p99_ms']} ms, max {run['max_ms']} ms")
    for key, value in results.items():
        print(f"  {key:48} {value:>12,}")
    if args.json_out is not None:
        args.json_out.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
