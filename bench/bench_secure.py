"""Benchmark: the cost of TLS and authentication — `cdc consume` on the secured stack beside the open one.

Both stacks run at once: the open one (`make bench` starts it) and the secured one (`stack up --secure`
in a state dir and on ports of its own, started here if needed and stopped again if so). The same
generated ticker/kline records are produced to a fresh topic on each; one `cdc consume` per stack applies
them into a fresh keyspace (on the secured stack made by its admin role and granted to the pipeline role,
which may not create keyspaces). Rounds alternate open/secured so machine noise hits both alike; the
figure is the best round of each and their ratio (secured ÷ open, 1.0 = no cost).

    .venv/bin/python bench/bench_secure.py [--events 20000] [--rounds 2] [--json-out FILE]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.bench_consumer import produce, records, run_consumer  # noqa: E402
from cdc_consumer import cql_session, kafka_clients, schema  # noqa: E402
from cdc_consumer.config import Settings  # noqa: E402
from tests.secure.stack import SecureStack  # noqa: E402
from tests.support import unique_name  # noqa: E402


@dataclasses.dataclass
class Side:
    name: str
    env: dict[str, str]
    admin_password: str | None = None  # secured stack: keyspaces are made by its admin role

    @property
    def settings(self) -> Settings:
        return Settings.from_env(self.env)

    def admin_session(self):
        """A Cassandra session that may create and drop keyspaces (the secured stack's admin role)."""
        cfg = self.settings.cassandra
        if self.admin_password:
            cfg = dataclasses.replace(cfg, username="admin", password=self.admin_password)
        return cql_session.connect(cfg)

    def fresh_keyspace(self) -> str:
        cfg = self.settings.cassandra
        keyspace = unique_name("bench_sec")
        cluster, session = self.admin_session()
        try:
            schema.apply_cql(session, keyspace)
            if self.admin_password:
                for permission in ("SELECT", "MODIFY"):
                    session.execute(f"GRANT {permission} ON KEYSPACE {keyspace} TO {cfg.username}", timeout=60)
        finally:
            cluster.shutdown()
        return keyspace

    def drop(self, keyspace: str, topic: str) -> None:
        cluster, session = self.admin_session()
        try:
            session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}", timeout=120)
        finally:
            cluster.shutdown()
        kafka_clients.admin(self.settings.kafka_client).delete_topics([topic])

    def run(self, stream, events: int, partitions: int) -> float:
        topic = unique_name("bench_secure")
        produce(self.settings.kafka_client, topic, partitions, stream)
        keyspace = self.fresh_keyspace()
        try:
            return run_consumer(topic, keyspace, events, env=self.env)["events_per_s"]
        finally:
            self.drop(keyspace, topic)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args()

    stack = SecureStack()
    t0 = time.monotonic()
    secure_env = stack.up()
    started = time.monotonic() - t0
    try:
        open_side = Side("open", dict(os.environ))
        secure_side = Side("secured", secure_env, stack.secrets()["CASSANDRA_ADMIN_PASSWORD"])
        stream = records(args.events)
        rates: dict[str, list[float]] = {"open": [], "secured": []}
        for _ in range(args.rounds):
            for side in (open_side, secure_side):
                rates[side.name].append(side.run(stream, args.events, args.partitions))
    finally:
        stack.down()
    best = {name: max(values) for name, values in rates.items()}
    results = {
        "secure.open_events_per_s": round(best["open"]),
        "secure.secured_events_per_s": round(best["secured"]),
        "secure.tls_auth_ratio": round(best["secured"] / best["open"], 3),
        "secure.stack_up_s": round(started, 1),
    }
    print(f"{args.events} events, {args.rounds} alternating rounds per stack, one `cdc consume` each:")
    for name, values in rates.items():
        print(f"  {name:8} rounds: {', '.join(f'{v:,.0f}' for v in values)} events/s")
    for key, value in results.items():
        print(f"  {key:34} {value:>12,}")
    if args.json_out is not None:
        args.json_out.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
