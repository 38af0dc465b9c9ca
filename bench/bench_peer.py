"""Benchmark: `cdc consume` raced against the real peer, the DataStax Apache Kafka Connector for Cassandra.

Setup: 60,000 Debezium ticker_24h envelopes (bench/envelopes.py, 50 symbols) on one 3-partition topic. Each
run writes a fresh keyspace with the project's tables (cql/schema.cql); both products write `ticker_by_day`
and `latest_prices` from every event.

  cdc        `cdc consume` as a child process (defaults), its own consumer group.
  datastax   the DataStax sink (`bench/peer_datastax_ticker.json`: the working config of
             ../shared/peers/datastax-cassandra-sink/configs, topic and keyspace rewritten) as a connector
             of the stack's own Kafka Connect worker, tasks.max 3. Its jar is copied into
             $CDC_STATE_DIR/connect-plugins/datastax-cassandra-sink (a plugin dir `compose/native/stack`
             puts on Connect's plugin.path) from $CDC_PEER_DATASTAX_JAR or the shared directory; Connect
             is restarted when its plugin list lacks the connector. Without a jar the race is skipped.

Runs: one untimed warm-up of the peer (JIT of the Connect JVM), then the two products one at a time,
interleaved, --rounds times each. Completion is judged by rows in Cassandra, not by group lag (Connect
commits sink offsets only every offset.flush.interval.ms): a run starts when its first row is visible
and ends when every symbol's `latest_prices` row holds its last event and `ticker_by_day` holds every
row. CPU seconds (utime + stime from /proc/PID/stat) of the product process (the Connect JVM or the
`cdc consume` process) and of Cassandra are read at those two moments.

Correctness: every row of every keyspace is read back and compared with the rows derived from the
source stream (decimals exactly, digits and scale; doubles bit for bit; write timestamps = the source
commit time in µs), and the products' keyspaces with each other.

    .venv/bin/python bench/bench_peer.py [--events 60000] [--rounds 2] [--json-out FILE]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Protocol

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cassandra.query import tuple_factory
from cassandra.util import Date as CqlDate

from bench.bench_consumer import fresh_keyspace, print_figures, produce
from bench.cpu import CORES, MachineCpu, cpu_seconds, stack_pids, state_dir
from bench.envelopes import Stream, ticker_stream
from cdc_consumer import cql_session, kafka_clients
from cdc_consumer.config import Settings
from connectors.connect_client import ConnectClient, ConnectorNotFound
from tests.support import unique_name, wait_until

PEER_CLASS = "com.datastax.oss.kafka.sink.CassandraSinkConnector"
PEER_CONFIG = REPO / "bench" / "peer_datastax_ticker.json"
PEER_TEMPLATE_TOPIC, PEER_TEMPLATE_KEYSPACE = "cdc.public.ticker_24h", "market"
SHARED_PEER_DIRS = (REPO.parent / "shared" / "peers" / "datastax-cassandra-sink",
                    Path("/work/shared/peers/datastax-cassandra-sink"))
SYMBOLS = 50
TARGETS = {"peer.events_ratio": (">=", 3.0), "peer.cpu_per_event_ratio": ("<=", 0.25)}
STACK = REPO / "compose" / "native" / "stack"


class PeerUnavailable(RuntimeError):
    """The peer cannot run here (no jar, or Connect does not load it); the race is skipped, saying why."""


# --- the processes whose CPU is counted --------------------------------------------------------------

# --- the peer's installation -------------------------------------------------------------------------

def peer_jar() -> Path:
    configured = os.environ.get("CDC_PEER_DATASTAX_JAR")
    if configured:
        if not Path(configured).is_file():
            raise PeerUnavailable(f"CDC_PEER_DATASTAX_JAR={configured} is not a file")
        return Path(configured)
    for folder in SHARED_PEER_DIRS:
        jars = sorted(folder.glob("kafka-connect-cassandra-sink-*.jar"))
        if jars:
            return jars[-1]
    raise PeerUnavailable("no DataStax sink jar (set CDC_PEER_DATASTAX_JAR, or put ../shared/peers/"
                          "datastax-cassandra-sink beside the repository)")


def install_peer(client: ConnectClient, jar: Path) -> None:
    """The jar in this stack's extra plugin dir; Connect restarted if it does not list the connector yet."""
    plugin_dir = state_dir() / "connect-plugins" / "datastax-cassandra-sink"
    target = plugin_dir / jar.name
    if not target.exists() or target.stat().st_size != jar.stat().st_size:
        shutil.rmtree(plugin_dir, ignore_errors=True)
        plugin_dir.mkdir(parents=True)
        shutil.copyfile(jar, target)
    if PEER_CLASS in client.plugins():
        return
    print("  restarting Kafka Connect so it loads the DataStax sink from its plugin path", flush=True)
    for command in ("down", "up"):
        subprocess.run([str(STACK), command, "connect"], check=True, timeout=600)
    plugins = wait_until(lambda: client.plugins(), timeout=120, what="Connect's plugin list")
    if PEER_CLASS not in plugins:
        raise PeerUnavailable(f"Connect does not list {PEER_CLASS} after a restart with {target} on its "
                              "plugin path (is compose/native/stack's connect_plugin_path in use?)")


def peer_config(topic: str, keyspace: str, settings: Settings) -> dict[str, str]:
    """The shared working config, its topic, keyspace and contact point rewritten."""
    config = json.loads(PEER_CONFIG.read_text())["config"]
    rewritten = {}
    for key, value in config.items():
        key = key.replace(f"topic.{PEER_TEMPLATE_TOPIC}.", f"topic.{topic}.")
        key = key.replace(f".{PEER_TEMPLATE_KEYSPACE}.", f".{keyspace}.")
        rewritten[key] = value
    rewritten.update({"topics": topic, "contactPoints": ",".join(settings.cassandra.hosts),
                      "port": str(settings.cassandra.port)})
    return rewritten


# --- one timed run ------------------------------------------------------------------------------------

class ProductFailed(RuntimeError):
    """A product stopped or failed during its run: the race cannot go on."""


class Product(Protocol):
    """Starts a product writing `keyspace` from `topic`; `pids()` are the processes whose CPU counts."""

    name: str = ""

    def start(self, topic: str, keyspace: str) -> None: ...
    def pids(self) -> list[int]: ...
    def check(self) -> None: ...
    def stop(self) -> None: ...


class CdcConsume(Product):
    name = "cdc"

    def start(self, topic: str, keyspace: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cdc_cli.cli", "consume", "--topics", topic, "--group", unique_name("peer"),
             "--cassandra-keyspace", keyspace, "--progress-every", "0"],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def pids(self) -> list[int]:
        return [self.process.pid]

    def check(self) -> None:
        if self.process.poll() is not None:
            assert self.process.stderr is not None  # stderr=PIPE
            raise ProductFailed(f"cdc consume exited {self.process.returncode}: {self.process.stderr.read()[-2000:]}")

    def stop(self) -> None:
        self.process.terminate()
        _, errors = self.process.communicate(timeout=120)
        if self.process.returncode != 0:
            raise RuntimeError(f"cdc consume exited {self.process.returncode}: {errors[-2000:]}")


class DataStaxSink(Product):
    name = "datastax"

    def __init__(self, client: ConnectClient, settings: Settings) -> None:
        self.client, self.settings = client, settings
        self.last_check = 0.0

    def start(self, topic: str, keyspace: str) -> None:
        self.connector = unique_name("datastax_sink")
        self.client.put_config(self.connector, peer_config(topic, keyspace, self.settings))

    def pids(self) -> list[int]:
        return stack_pids("connect")

    def check(self) -> None:
        if time.monotonic() - self.last_check < 1:
            return
        self.last_check = time.monotonic()
        try:
            failures = self.client.status(self.connector).failures
        except ConnectorNotFound:  # 404 for a moment after creation
            return
        if failures:
            raise ProductFailed(f"DataStax sink failed: {failures[0][0]}: {(failures[0][1] or '')[:2000]}")

    def stop(self) -> None:
        self.client.delete(self.connector)


def timed_run(product: Product, session, topic: str, keyspace: str, stream: Stream) -> dict:
    last_event_us = {symbol: us for symbol, us in expected_latest_times(stream).items()}
    first_row = session.prepare(f"SELECT symbol FROM {keyspace}.latest_prices LIMIT 1")
    latest = session.prepare(f"SELECT symbol, event_time_us FROM {keyspace}.latest_prices")
    cassandra = stack_pids("cassandra")

    def sample() -> tuple[float, float, float, MachineCpu]:
        return time.perf_counter(), cpu_seconds(product.pids()), cpu_seconds(cassandra), MachineCpu.now()

    def visible(statement, done: Callable[[list], bool]):
        product.check()
        rows = list(session.execute(statement))
        return done(rows) and sample()

    product.start(topic, keyspace)
    try:
        # Probes: a LIMIT 1 read, then one 50-row read every 50 ms: light next to the writes.
        start = wait_until(lambda: visible(first_row, bool), timeout=300, interval=0.01,
                           what=f"{product.name}'s first row", fatal=(ProductFailed,))
        end = wait_until(lambda: visible(latest, lambda rows: dict(rows) == last_event_us), timeout=600,
                         interval=0.05, what=f"{product.name}: every symbol's last event", fatal=(ProductFailed,))
        # Every history row too; when the count lags the probe (a write of an earlier event still in
        # flight), the run ends when the count is complete.
        count = session.prepare(f"SELECT COUNT(*) FROM {keyspace}.ticker_by_day")
        if session.execute(count, timeout=120).one()[0] < len(stream.rows):
            end = wait_until(lambda: visible(count, lambda rows: rows[0][0] >= len(stream.rows)), timeout=600,
                             interval=0.2, what=f"{product.name}: every ticker_by_day row", fatal=(ProductFailed,))
    finally:
        product.stop()
    (t0, product0, cassandra0, machine0), (t1, product1, cassandra1, machine1) = start, end
    events = len(stream.records)
    return {"events_per_s": events / (t1 - t0), "seconds": t1 - t0,
            "product_cpu_per_10k": (product1 - product0) / events * 10_000,
            "cassandra_cpu_per_10k": (cassandra1 - cassandra0) / events * 10_000,
            "product_cores": (product1 - product0) / (t1 - t0),
            "machine_busy_share": machine1.busy_share_since(machine0)}


# --- correctness --------------------------------------------------------------------------------------

def expected_latest_times(stream: Stream) -> dict[str, int]:
    return {row["symbol"]: epoch_us(row["event_time"]) for row in stream.rows.values()}


def epoch_us(moment: dt.datetime) -> int:
    return (moment - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(microseconds=1)


def exact(value):
    """Decimals compared by digits and scale, doubles bit for bit (`float.hex`), anything else as is."""
    if isinstance(value, Decimal):
        return ("decimal", value.as_tuple())
    if isinstance(value, float):
        return ("double", value.hex())
    if isinstance(value, CqlDate):
        return value.date()
    return value


def source_rows(stream: Stream, start_ts_us: int) -> dict[str, dict[tuple, tuple]]:
    """The rows both tables must hold, derived from the source rows (stream order = commit order:
    the i-th change was committed at start_ts_us + i). Row = (column values..., write time)."""
    history, latest = {}, {}
    for index, row in enumerate(stream.rows.values()):
        event_time, event_us = row["event_time"], epoch_us(row["event_time"])
        values = {"symbol": row["symbol"], "day": event_time.date(), "event_time_us": event_us,
                  "event_time": dt.datetime(1970, 1, 1) + dt.timedelta(milliseconds=event_us // 1000),  # driver: naive UTC
                  "trade_count": row["trade_count"]}
        for column, value in row.items():
            if isinstance(value, Decimal):
                values[column], values[f"{column}_exact"] = float(value), value
        history[(row["symbol"], event_us)] = (values, start_ts_us + index)
        latest[row["symbol"]] = (values, start_ts_us + index)
    return {"ticker_by_day": history, "latest_prices": latest}


def table_columns(session, keyspace: str, table: str) -> list[str]:
    rows = session.execute("SELECT column_name FROM system_schema.columns WHERE keyspace_name = %s AND "
                           "table_name = %s", (keyspace, table))
    return sorted(row[0] for row in rows)


def read_table(session, keyspace: str, table: str, columns: list[str]) -> dict[tuple, tuple]:
    """Every row of the table: key -> (exact values of every column, write times of two columns)."""
    statement = session.prepare(f"SELECT {', '.join(columns)}, WRITETIME(last_price_exact), "
                                f"WRITETIME(trade_count) FROM {keyspace}.{table}")
    statement.fetch_size = 5000
    key = ("symbol", "event_time_us") if table == "ticker_by_day" else ("symbol",)
    positions = [columns.index(c) for c in key]
    return {tuple(row[p] for p in positions): tuple(map(exact, row)) for row in session.execute(statement, timeout=120)}


def differences(session, keyspaces: dict[str, str], stream: Stream, start_ts_us: int) -> list[str]:
    """Rows of each keyspace that differ from the source, and from each other; [] when all identical."""
    problems = []
    expected_tables = source_rows(stream, start_ts_us)
    for table, expected_rows in expected_tables.items():
        columns = table_columns(session, next(iter(keyspaces.values())), table)
        positions = [columns.index(c) for c in ("symbol", "event_time_us")] if table == "ticker_by_day" else [
            columns.index("symbol")]
        expected = {}
        for values, write_time in expected_rows.values():
            row = tuple(exact(values.get(c)) for c in columns) + (write_time, write_time)
            expected[tuple(row[p] for p in positions)] = row
        seen: dict[str, dict] = {}
        for run, keyspace in keyspaces.items():
            seen[run] = actual = read_table(session, keyspace, table, columns)
            missing, extra = expected.keys() - actual.keys(), actual.keys() - expected.keys()
            wrong = [k for k in expected.keys() & actual.keys() if expected[k] != actual[k]]
            for kind, keys in (("missing", missing), ("extra", extra), ("differing", wrong)):
                if keys:
                    sample = sorted(keys, key=str)[0]
                    problems.append(f"{run} {table}: {len(keys)} {kind} row(s), e.g. {sample}: "
                                    f"expected {expected.get(sample)}, got {actual.get(sample)}")
        runs = list(seen)
        for other in runs[1:]:
            if seen[other] != seen[runs[0]]:
                problems.append(f"{table}: {other} differs from {runs[0]}")
    return problems


# --- the race -------------------------------------------------------------------------------------------

def summary(runs: list[dict]) -> dict:
    return {key: statistics.median(r[key] for r in runs) for key in runs[0]}


def race(settings: Settings, events: int, rounds: int, partitions: int) -> dict:
    kafka = settings.kafka_client
    client = ConnectClient(settings.connect_url)
    install_peer(client, peer_jar())
    start_ts_us = time.time_ns() // 1000
    stream = ticker_stream(events, symbols=SYMBOLS, start_ts_us=start_ts_us)
    if len(stream.rows) != events:
        raise RuntimeError("the ticker stream must hold one source row per event")
    topic = unique_name("bench_peer")
    produce(kafka, topic, partitions, stream.records)
    cluster, session = cql_session.connect(settings.cassandra)
    cluster.profile_manager.default.row_factory = tuple_factory  # rows as plain tuples
    products = {"datastax": DataStaxSink(client, settings), "cdc": CdcConsume()}
    order = ["datastax"] + [name for _ in range(rounds) for name in ("cdc", "datastax")]
    keyspaces = [fresh_keyspace(session) for _ in order]  # schema changes are slow: none while timing
    runs: dict[str, list[dict]] = {"cdc": [], "datastax": []}
    try:
        for number, (name, keyspace) in enumerate(zip(order, keyspaces)):
            run = timed_run(products[name], session, topic, keyspace, stream)
            warm_up = number == 0
            if not warm_up:
                runs[name].append(run)
            print(f"  {name:9} {'warm-up' if warm_up else f'run {len(runs[name])}':8} "
                  f"{run['events_per_s']:>9,.0f} events/s  {run['seconds']:6.2f} s  "
                  f"CPU s/10k events: product {run['product_cpu_per_10k']:.3f}, "
                  f"Cassandra {run['cassandra_cpu_per_10k']:.3f}; product used {run['product_cores']:.2f} cores, "
                  f"machine {run['machine_busy_share']:.0%} busy", flush=True)
        compared = {f"{name}#{i}": ks for i, (name, ks) in enumerate(zip(order, keyspaces)) if i > 0}
        problems = differences(session, compared, stream, start_ts_us)
    finally:
        for keyspace in keyspaces:
            session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}", timeout=120)
        cluster.shutdown()
        kafka_clients.admin(kafka).delete_topics([topic])
    for problem in problems:
        print(f"  ROWS DIFFER: {problem}", file=sys.stderr)
    ours, peer = summary(runs["cdc"]), summary(runs["datastax"])
    rows = events + SYMBOLS  # ticker_by_day + latest_prices
    return {
        "peer.datastax_events_per_s": round(peer["events_per_s"]),
        "peer.cdc_events_per_s": round(ours["events_per_s"]),
        "peer.events_ratio": round(ours["events_per_s"] / peer["events_per_s"], 2),
        "peer.cpu_per_event_ratio": round(ours["product_cpu_per_10k"] / peer["product_cpu_per_10k"], 3),
        "peer.datastax_cpu_s_per_10k": round(peer["product_cpu_per_10k"], 3),
        "peer.cdc_cpu_s_per_10k": round(ours["product_cpu_per_10k"], 3),
        "peer.datastax_cassandra_cpu_s_per_10k": round(peer["cassandra_cpu_per_10k"], 3),
        "peer.cdc_cassandra_cpu_s_per_10k": round(ours["cassandra_cpu_per_10k"], 3),
        "peer.datastax_cores": round(peer["product_cores"], 2),
        "peer.cdc_cores": round(ours["product_cores"], 2),
        "peer.datastax_machine_busy_share": round(peer["machine_busy_share"], 2),
        "peer.cdc_machine_busy_share": round(ours["machine_busy_share"], 2),
        "peer.rows_written_each": rows,
        "peer.rows_compared": rows * (len(order) - 1),
        "peer.rows_identical": not problems,
    }


def explain(results: dict) -> None:
    """Where each product's rate stopped: the cores it and the machine used, and the rate at which cdc +
    Cassandra, at the CPU per event measured for cdc, would fill every core (so the ratio the machine allows)."""
    if "peer.events_ratio" not in results:
        return
    per_10k = results["peer.cdc_cpu_s_per_10k"] + results["peer.cdc_cassandra_cpu_s_per_10k"]
    ceiling = CORES * 10_000 / per_10k
    print(f"  DataStax sink: the Connect JVM used {results['peer.datastax_cores']} cores, the machine was "
          f"{results['peer.datastax_machine_busy_share']:.0%} busy; cdc consume used {results['peer.cdc_cores']} "
          f"cores, the machine {results['peer.cdc_machine_busy_share']:.0%} busy")
    print(f"  cdc + Cassandra at cdc's CPU per event would fill all {CORES} cores at {ceiling:,.0f} events/s, "
          f"{ceiling / results['peer.datastax_events_per_s']:.1f}x the peer's rate")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--rounds", type=int, default=2, help="timed runs of each product (interleaved)")
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args()

    print(f"{args.events} ticker events ({args.partitions} partitions, {SYMBOLS} symbols), each product writing "
          "ticker_by_day + latest_prices into a fresh keyspace; medians of the interleaved runs:")
    try:
        results = race(Settings.from_env(), args.events, args.rounds, args.partitions)
    except PeerUnavailable as exc:
        print(f"  peer race skipped: {exc}")
        results = {"peer.skipped": str(exc)}
    print_figures(results, TARGETS, width=40)
    explain(results)
    if args.json_out is not None:
        args.json_out.write_text(json.dumps(results, indent=1) + "\n")
    return 0 if results.get("peer.rows_identical", True) else 1


if __name__ == "__main__":
    sys.exit(main())
