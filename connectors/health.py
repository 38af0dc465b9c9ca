"""Pipeline health for `cdc status`: gather facts from each service, then judge them against thresholds.

Gathering never raises for an unreachable service: the part records the error and judging turns it into
a problem, so one screen always shows everything that could be learnt. Judging is a pure function.

What is gathered:
- Kafka Connect: connector and task states (and the first lines of a failed task's trace);
- PostgreSQL: the connector's replication slot — active, `wal_status`, and the WAL it retains
  (`pg_current_wal_lsn() - confirmed_flush_lsn`);
- Kafka: the sink consumer group's committed offset and lag per partition of the connector's topics;
- Cassandra: the newest row time of each table, and the end-to-end freshness = the age of the newest
  row anywhere in the sink (market data written by the poller moments ago should be there now).
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from cdc_consumer import cql_session, pg
from cdc_consumer.config import CassandraSettings, HttpAuth, KafkaSettings, PostgresSettings
from connectors import slots
from connectors.config import ConfigError, load_template, render
from connectors.connect_client import (
    RUNNING,
    ConnectClient,
    ConnectError,
    ConnectorNotFound,
    ConnectorState,
    root_cause,
)

PARTS = ("connector", "slot", "consumer", "cassandra", "cluster")

# Replicas that must answer for a consistency level, given the replication factor in the DC.
_QUORUM_LEVELS = ("QUORUM", "LOCAL_QUORUM", "EACH_QUORUM")
_FIXED_LEVELS = {"ANY": 1, "ONE": 1, "LOCAL_ONE": 1, "TWO": 2, "THREE": 3}
DEFAULT_MAX_WAL_BYTES = 512 * 1024 * 1024
DEFAULT_GROUP = "cdc-consume"  # `cdc consume --group` default
# When several timestamp columns could say how new a row is, the first of these wins.
_TIME_COLUMNS = ("event_time", "trade_time", "snapshot_time", "close_time", "open_time", "ts", "updated_at")


@dataclass(frozen=True)
class Thresholds:
    max_wal_bytes: int | None = DEFAULT_MAX_WAL_BYTES
    max_lag: int | None = None  # None: lag is reported, not judged
    max_freshness_s: float | None = None


@dataclass(frozen=True)
class Targets:
    """What to look at and where."""
    connector: str
    connect_url: str
    postgres: PostgresSettings
    kafka_bootstrap: str
    group: str
    cassandra: CassandraSettings
    skip: frozenset[str] = frozenset()
    kafka: KafkaSettings | None = None  # client properties (security); None: plain kafka_bootstrap
    connect_auth: HttpAuth = HttpAuth()


@dataclass
class ConnectorHealth:
    name: str
    state: ConnectorState | None = None  # None: missing or Connect unreachable
    missing: bool = False
    error: str | None = None


@dataclass
class SlotHealth:
    name: str
    exists: bool = False
    active: bool | None = None
    wal_status: str | None = None
    retained_bytes: int | None = None
    error: str | None = None


@dataclass
class PartitionLag:
    topic: str
    partition: int
    committed: int | None  # None: the group never committed on this partition
    end: int
    lag: int


@dataclass
class ConsumerHealth:
    group: str
    partitions: list[PartitionLag] = field(default_factory=list)
    missing_topics: list[str] = field(default_factory=list)
    error: str | None = None
    # Why running `cdc consume` processes of the group wait, from their pause-state files (pause_state.py):
    # [{"reason", "since", "message", "pid"}]; empty when none is paused or none runs on this machine.
    pauses: list[dict] = field(default_factory=list)

    @property
    def total_lag(self) -> int:
        return sum(p.lag for p in self.partitions)


@dataclass
class TableFreshness:
    table: str
    time_column: str | None = None
    newest: datetime | None = None
    age_s: float | None = None
    missing: bool = False
    error: str | None = None


@dataclass
class SinkHealth:
    keyspace: str
    tables: list[TableFreshness] = field(default_factory=list)
    error: str | None = None

    @property
    def freshness_s(self) -> float | None:
        """Age of the newest row in any table: how far behind now the sink's data ends."""
        ages = [t.age_s for t in self.tables if t.age_s is not None]
        return min(ages) if ages else None


@dataclass
class NodeHealth:
    address: str
    datacenter: str | None
    rack: str | None
    up: bool


@dataclass
class ClusterHealth:
    """Per-node health of the Cassandra ring and the Kafka cluster, and whether the configured Cassandra
    consistency can be met for every token range of the keyspace (fewest live replicas of any range)."""
    consistency: str
    nodes: list[NodeHealth] = field(default_factory=list)
    replication_factor: int | None = None
    fewest_live_replicas: int | None = None
    required_replicas: int | None = None
    cassandra_error: str | None = None
    brokers: list[int] = field(default_factory=list)
    under_replicated: list[str] = field(default_factory=list)  # "topic[p] isr=[..] replicas=[..]"
    unwritable: list[str] = field(default_factory=list)  # no leader, or in-sync replicas < min.insync.replicas
    kafka_error: str | None = None


@dataclass
class HealthReport:
    checked_at: datetime
    connector: ConnectorHealth | None = None
    slot: SlotHealth | None = None
    consumer: ConsumerHealth | None = None
    sink: SinkHealth | None = None
    cluster: ClusterHealth | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        """Plain data for `--json`, with the derived figures spelled out."""
        data = asdict(self)
        data["healthy"] = self.healthy
        if self.consumer is not None:
            data["consumer"]["total_lag"] = self.consumer.total_lag
        if self.sink is not None:
            data["sink"]["freshness_s"] = self.sink.freshness_s
        return data


@dataclass(frozen=True)
class CaptureSettings:
    """What the connector captures: read from its live config, else from the default template."""
    slot_name: str
    topics: tuple[str, ...]


# --- gathering -------------------------------------------------------------------------------------

def gather(targets: Targets, thresholds: Thresholds, *, now: datetime | None = None) -> HealthReport:
    now = now or datetime.now(UTC)
    report = HealthReport(checked_at=now)
    client = ConnectClient(targets.connect_url, timeout=5, rebalance_wait=5, auth=targets.connect_auth)
    live_config = None
    if "connector" not in targets.skip:
        report.connector, live_config = connector_health(client, targets.connector)
    capture = capture_settings(live_config)
    if "slot" not in targets.skip:
        report.slot = slot_health(targets.postgres, capture.slot_name)
    if "consumer" not in targets.skip:
        report.consumer = consumer_health(targets.kafka or KafkaSettings(targets.kafka_bootstrap), targets.group,
                                          capture.topics)
        report.consumer.pauses = consumer_pauses(targets.group)
    if "cassandra" not in targets.skip:
        report.sink = sink_health(targets.cassandra, now)
    if "cluster" not in targets.skip:
        report.cluster = cluster_health(None if "cassandra" in targets.skip else targets.cassandra,
                                        None if "consumer" in targets.skip
                                        else targets.kafka or KafkaSettings(targets.kafka_bootstrap))
    report.problems = judge(report, thresholds)
    return report


def connector_health(client: ConnectClient, name: str) -> tuple[ConnectorHealth, dict | None]:
    health = ConnectorHealth(name)
    try:
        config = client.get_config(name)
        if config is None:
            health.missing = True
            return health, None
        health.state = client.status(name)
        return health, config
    except ConnectorNotFound:
        health.missing = True
    except ConnectError as exc:
        health.error = str(exc)
    return health, None


def capture_settings(live_config: dict | None, env=None) -> CaptureSettings:
    config = live_config
    if config is None:
        try:
            config = render(load_template(), os.environ if env is None else env).config
        except ConfigError:
            config = {}
    prefix = config.get("topic.prefix", "cdc")
    tables = [t.strip() for t in config.get("table.include.list", "").split(",") if t.strip()]
    return CaptureSettings(config.get("slot.name", "cdc_slot"), tuple(f"{prefix}.{t}" for t in tables))


def slot_health(postgres: PostgresSettings, slot_name: str) -> SlotHealth:
    health = SlotHealth(slot_name)
    try:
        with pg.connect(postgres, autocommit=True) as conn:
            state = slots.slot_state(conn, slot_name)
    except Exception as exc:  # noqa: BLE001 - any failure is reported, not raised
        health.error = _short(exc)
        return health
    if state is not None:
        health.exists, health.active = True, state.active
        health.wal_status, health.retained_bytes = state.wal_status, state.retained_bytes
    return health


def consumer_health(kafka: KafkaSettings, group: str, topics: Iterable[str]) -> ConsumerHealth:
    from confluent_kafka import TopicPartition

    from cdc_consumer import kafka_clients

    health = ConsumerHealth(group)
    watch = kafka_clients.ErrorWatch(kafka)
    try:
        consumer = kafka_clients.consumer(kafka, {"group.id": group, "enable.auto.commit": False,
                                                  "socket.timeout.ms": 5000}, watch=watch)
    except kafka_clients.KafkaConfigError as exc:
        health.error = str(exc)
        return health
    try:
        metadata = kafka_clients.metadata(consumer, kafka, watch, timeout=5)
        partitions = []
        for topic in topics:
            if topic not in metadata.topics:
                health.missing_topics.append(topic)
                continue
            partitions += [TopicPartition(topic, p) for p in sorted(metadata.topics[topic].partitions)]
        committed = consumer.committed(partitions, timeout=5) if partitions else []
        for tp in committed:
            low, high = consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=5)
            position = tp.offset if tp.offset >= 0 else None
            lag = high - (position if position is not None else low)
            health.partitions.append(PartitionLag(tp.topic, tp.partition, position, high, max(lag, 0)))
    except kafka_clients.KafkaUnavailable as exc:
        health.error = str(exc)
    except Exception as exc:  # noqa: BLE001
        watch.serve(consumer)
        health.error = kafka_clients.describe_failure(kafka, watch, exc)
    finally:
        consumer.close()
    return health


def consumer_pauses(group: str) -> list[dict]:
    """The pause reasons the group's consumers on this machine published (`cdc_consumer.pause_state`)."""
    from cdc_consumer.pause_state import read_states

    return [{"reason": p.reason, "since": p.since, "message": p.message, "pid": state.pid}
            for state in read_states(group) for p in state.pauses]


def sink_health(cfg: CassandraSettings, now: datetime) -> SinkHealth:
    health = SinkHealth(cfg.keyspace)
    try:
        cluster, session = cql_session.connect(cfg, timeout=5)
    except Exception as exc:  # noqa: BLE001
        health.error = _short(exc)
        return health
    try:
        columns = _timestamp_columns(session, cfg.keyspace)
        if columns is None:
            health.error = f"keyspace {cfg.keyspace} does not exist"
            return health
        for table in sorted(set(columns) | expected_tables()):
            health.tables.append(_table_freshness(session, cfg.keyspace, table, columns.get(table), now))
    finally:
        cluster.shutdown()
    return health


def cluster_health(cfg: CassandraSettings | None, kafka: KafkaSettings | None) -> ClusterHealth:
    """Either half is left out when its part (`cassandra`, `consumer`) is skipped."""
    health = ClusterHealth(cfg.consistency if cfg else "")
    if cfg is not None:
        _cassandra_nodes(cfg, health)
    if kafka is not None:
        _kafka_brokers(kafka, health)
    return health


def required_replicas(consistency: str, replication_factor: int) -> int:
    if consistency in _QUORUM_LEVELS:
        return replication_factor // 2 + 1
    return _FIXED_LEVELS.get(consistency, replication_factor)  # ALL


def _cassandra_nodes(cfg: CassandraSettings, health: ClusterHealth) -> None:
    """Ring members as the driver sees them right after connecting (a node it cannot reach is down), and
    the live replicas of every token range of the keyspace."""
    try:
        cluster, _session = cql_session.connect(cfg, timeout=5)
    except Exception as exc:  # noqa: BLE001
        health.cassandra_error = _short(exc)
        return
    try:
        hosts = sorted(cluster.metadata.all_hosts(), key=lambda h: h.address)
        # The driver marks a host it failed to reach as down a moment after connect() returns, so its flag
        # alone races; a node also counts as down when its CQL port refuses a connection.
        live = {h for h in hosts if h.is_up is not False and _accepts(h.address, cfg.port)}
        health.nodes = [NodeHealth(h.address, h.datacenter, h.rack, h in live) for h in hosts]
        token_map = cluster.metadata.token_map
        keyspace = cluster.metadata.keyspaces.get(cfg.keyspace)
        if token_map is None or keyspace is None:
            return
        replica_sets = [token_map.get_replicas(cfg.keyspace, token) for token in token_map.ring]
        local = [[r for r in replicas if cfg.local_dc is None or r.datacenter == cfg.local_dc]
                 for replicas in replica_sets]
        if local and all(local):
            health.replication_factor = max(len(r) for r in local)
            health.fewest_live_replicas = min(sum(1 for h in r if h in live) for r in local)
            health.required_replicas = required_replicas(cfg.consistency, health.replication_factor)
    finally:
        cluster.shutdown()


def _accepts(address: str, port: int, timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


def _kafka_brokers(kafka: KafkaSettings, health: ClusterHealth) -> None:
    """Live brokers, under-replicated partitions, and partitions acks=all cannot be written to."""
    from confluent_kafka.admin import ConfigResource

    from cdc_consumer import kafka_clients

    try:
        metadata = kafka_clients.probe(kafka, timeout=5)
    except Exception as exc:  # noqa: BLE001
        health.kafka_error = _short(exc)
        return
    health.brokers = sorted(metadata.brokers)
    short = [(t.topic, p) for t in metadata.topics.values() for p in t.partitions.values()
             if len(p.isrs) < len(p.replicas) or p.leader < 0]
    health.under_replicated = [f"{topic}[{p.id}] isr={sorted(p.isrs)} replicas={sorted(p.replicas)}"
                               for topic, p in short]
    if not short:
        return
    min_isr = {}
    try:
        client = kafka_clients.admin(kafka)
        resources = [ConfigResource(ConfigResource.Type.TOPIC, topic) for topic in {t for t, _ in short}]
        for resource, future in client.describe_configs(resources, request_timeout=5).items():
            entry = future.result(timeout=10).get("min.insync.replicas")
            min_isr[resource.name] = int(entry.value) if entry is not None else 1
    except Exception as exc:  # noqa: BLE001 - judged by leaders alone then
        health.kafka_error = f"min.insync.replicas not read: {_short(exc)}"
    health.unwritable = [f"{topic}[{p.id}] " + ("has no leader" if p.leader < 0 else
                                                f"has {len(p.isrs)} in-sync replica(s), needs {min_isr[topic]}")
                         for topic, p in short if p.leader < 0 or len(p.isrs) < min_isr.get(topic, 1)]


def expected_tables() -> set[str]:
    """Tables `cql/schema.cql` creates (empty until the sink's schema exists)."""
    from cdc_consumer.schema import cql_statements

    pattern = re.compile(r"CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?(?:\w+\.)?(\w+)", re.IGNORECASE)
    return {m.group(1).lower() for s in cql_statements() if (m := pattern.match(s))}


def _timestamp_columns(session, keyspace: str) -> dict[str, list[tuple]] | None:
    """table -> [(column, kind, position, clustering_order)] of its timestamp columns; None: no keyspace."""
    if not session.execute("SELECT keyspace_name FROM system_schema.keyspaces WHERE keyspace_name = %s",
                           (keyspace,)).one():
        return None
    tables: dict[str, list[tuple]] = {r.table_name: [] for r in session.execute(
        "SELECT table_name FROM system_schema.tables WHERE keyspace_name = %s", (keyspace,))}
    for r in session.execute("SELECT table_name, column_name, kind, position, clustering_order, type "
                             "FROM system_schema.columns WHERE keyspace_name = %s", (keyspace,)):
        if r.type == "timestamp":
            tables[r.table_name].append((r.column_name, r.kind, r.position, r.clustering_order))
    return tables


def _pick_time_column(columns: list[tuple]) -> tuple[str, bool] | None:
    """(column, newest-first in each partition) of the column that says how new a row is."""
    clustering = sorted((c for c in columns if c[1] == "clustering"), key=lambda c: c[2])
    if clustering and clustering[0][2] == 0:
        return clustering[0][0], clustering[0][3] == "desc"
    names = [c[0] for c in columns]
    for preferred in _TIME_COLUMNS:
        if preferred in names:
            return preferred, False
    return (min(names), False) if names else None


def _table_freshness(session, keyspace: str, table: str, columns: list[tuple] | None,
                     now: datetime) -> TableFreshness:
    result = TableFreshness(table)
    if columns is None:
        result.missing = True
        return result
    picked = _pick_time_column(columns)
    if picked is None:
        return result
    column, newest_first = picked
    result.time_column = column
    # Identifiers come from system_schema of an existing table; quoted to keep their exact case.
    query = (f'SELECT "{column}" AS t FROM "{keyspace}"."{table}" PER PARTITION LIMIT 1' if newest_first
             else f'SELECT max("{column}") AS t FROM "{keyspace}"."{table}"')
    try:
        times = [r.t for r in session.execute(query, timeout=10) if r.t is not None]
    except Exception as exc:  # noqa: BLE001
        result.error = _short(exc)
        return result
    if times:
        newest = max(times).replace(tzinfo=UTC)  # the driver returns naive UTC datetimes
        result.newest, result.age_s = newest, max((now - newest).total_seconds(), 0.0)
    return result


# --- judging ---------------------------------------------------------------------------------------

def judge(report: HealthReport, thresholds: Thresholds) -> list[str]:
    """Every reason the pipeline is not healthy, one sentence each; empty when healthy."""
    return (_connector_problems(report.connector) + _slot_problems(report.slot, thresholds)
            + _consumer_problems(report.consumer, thresholds) + _sink_problems(report.sink, thresholds)
            + _cluster_problems(report.cluster))


def _cluster_problems(c: ClusterHealth | None) -> list[str]:
    """Only what stops the pipeline: a consistency level no longer met, a partition that cannot be written.
    A node down while the rest still meet them is shown in the report, not counted as a problem; an
    unreachable service is already the consumer's or the sink's problem."""
    if c is None:
        return []
    problems = []
    if c.required_replicas is not None and (c.fewest_live_replicas or 0) < c.required_replicas:
        down = ", ".join(n.address for n in c.nodes if not n.up)
        problems.append(f"Cassandra cannot meet {c.consistency}: a token range has {c.fewest_live_replicas} of "
                        f"{c.replication_factor} replicas up, {c.required_replicas} needed (down: {down})")
    problems += [f"Kafka partition {p}: acks=all writes fail" for p in c.unwritable]
    return problems


def _connector_problems(c: ConnectorHealth | None) -> list[str]:
    if c is None:
        return []
    if c.error:
        return [c.error]
    if c.missing or c.state is None:
        return [f"connector {c.name} does not exist"]
    problems = [f"{what} FAILED: {_failure(trace)}" for what, trace in c.state.failures]
    if c.state.state not in (RUNNING, "FAILED"):
        problems.append(f"connector {c.name} is {c.state.state}: changes are not flowing")
    if not c.state.tasks:
        problems.append(f"connector {c.name} has no tasks")
    problems += [f"connector {c.name} task {t.id} is {t.state}" for t in c.state.tasks
                 if t.state not in (RUNNING, "FAILED", c.state.state)]
    return problems


def _slot_problems(s: SlotHealth | None, thresholds: Thresholds) -> list[str]:
    if s is None:
        return []
    if s.error:
        return [f"replication slot {s.name}: {s.error}"]
    if not s.exists:
        return [f"replication slot {s.name} does not exist"]
    problems = []
    if not s.active:
        problems.append(f"replication slot {s.name} is inactive: nothing reads it and PostgreSQL keeps its WAL")
    if s.wal_status in ("unreserved", "lost"):
        problems.append(f"replication slot {s.name} wal_status is {s.wal_status}: WAL it needs is being removed")
    if thresholds.max_wal_bytes is not None and (s.retained_bytes or 0) > thresholds.max_wal_bytes:
        problems.append(f"replication slot {s.name} retains {s.retained_bytes} bytes of WAL "
                        f"(more than {thresholds.max_wal_bytes})")
    return problems


def _consumer_problems(c: ConsumerHealth | None, thresholds: Thresholds) -> list[str]:
    if c is None:
        return []
    if c.error:
        return [c.error]
    problems = [f"consumer {p['pid']} of group {c.group} paused ({p['reason']}) since "
                f"{datetime.fromtimestamp(p['since'], UTC):%H:%M:%S} UTC: {p['message']}" for p in c.pauses]
    if thresholds.max_lag is not None and c.total_lag > thresholds.max_lag:
        worst = max(c.partitions, key=lambda p: p.lag)
        problems.append(f"consumer group {c.group} lags {c.total_lag} messages (more than {thresholds.max_lag}; "
                        f"worst {worst.topic}[{worst.partition}] {worst.lag})")
    return problems


def _sink_problems(s: SinkHealth | None, thresholds: Thresholds) -> list[str]:
    if s is None:
        return []
    if s.error:
        return [f"Cassandra: {s.error}"]
    problems = [f"Cassandra table {s.keyspace}.{t.table} is missing" for t in s.tables if t.missing]
    problems += [f"Cassandra table {s.keyspace}.{t.table}: {t.error}" for t in s.tables if t.error]
    if thresholds.max_freshness_s is not None:
        freshness = s.freshness_s
        if freshness is None:
            problems.append(f"Cassandra keyspace {s.keyspace} has no rows to judge freshness by")
        elif freshness > thresholds.max_freshness_s:
            problems.append(f"newest row in Cassandra is {freshness:.1f}s old "
                            f"(more than {thresholds.max_freshness_s:g}s)")
    return problems


def _failure(trace: str | None) -> str:
    """A failed task's exception, and its root cause when another exception wraps it."""
    first, cause = _first_line(trace), root_cause(trace)
    return f"{first} (caused by {cause})" if cause and cause not in first else first


def _first_line(text: str | None) -> str:
    lines = (text or "").strip().splitlines()
    return lines[0] if lines else "(no trace)"


def _short(exc: BaseException) -> str:
    return _first_line(str(exc)) if str(exc).strip() else type(exc).__name__
