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
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from cdc_consumer import cql_session, pg
from cdc_consumer.config import CassandraSettings, PostgresSettings
from cdc_consumer.redact import mask_text
from connectors import slots
from connectors.config import ConfigError, load_template, render
from connectors.connect_client import RUNNING, ConnectClient, ConnectError, ConnectorNotFound, ConnectorState

PARTS = ("connector", "slot", "consumer", "cassandra")
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
class HealthReport:
    checked_at: datetime
    connector: ConnectorHealth | None = None
    slot: SlotHealth | None = None
    consumer: ConsumerHealth | None = None
    sink: SinkHealth | None = None
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
    client = ConnectClient(targets.connect_url, timeout=5, rebalance_wait=5)
    live_config = None
    if "connector" not in targets.skip:
        report.connector, live_config = connector_health(client, targets.connector)
    capture = capture_settings(live_config)
    if "slot" not in targets.skip:
        report.slot = slot_health(targets.postgres, capture.slot_name)
    if "consumer" not in targets.skip:
        report.consumer = consumer_health(targets.kafka_bootstrap, targets.group, capture.topics)
    if "cassandra" not in targets.skip:
        report.sink = sink_health(targets.cassandra, now)
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


def consumer_health(bootstrap: str, group: str, topics: Iterable[str]) -> ConsumerHealth:
    from confluent_kafka import Consumer, TopicPartition

    health = ConsumerHealth(group)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
                         "socket.timeout.ms": 5000, "logger": _quiet_logger()})
    try:
        metadata = consumer.list_topics(timeout=5)
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
    except Exception as exc:  # noqa: BLE001
        health.error = mask_text(f"Kafka at {bootstrap}: {_short(exc)}")
    finally:
        consumer.close()
    return health


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
            + _consumer_problems(report.consumer, thresholds) + _sink_problems(report.sink, thresholds))


def _connector_problems(c: ConnectorHealth | None) -> list[str]:
    if c is None:
        return []
    if c.error:
        return [c.error]
    if c.missing or c.state is None:
        return [f"connector {c.name} does not exist"]
    problems = [f"{what} FAILED: {_first_line(trace)}" for what, trace in c.state.failures]
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
    if thresholds.max_lag is not None and c.total_lag > thresholds.max_lag:
        worst = max(c.partitions, key=lambda p: p.lag)
        return [(f"consumer group {c.group} lags {c.total_lag} messages (more than {thresholds.max_lag}; "
                f"worst {worst.topic}[{worst.partition}] {worst.lag})")]
    return []


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


def _first_line(text: str | None) -> str:
    lines = (text or "").strip().splitlines()
    return lines[0] if lines else "(no trace)"


def _short(exc: BaseException) -> str:
    return _first_line(str(exc)) if str(exc).strip() else type(exc).__name__


def _quiet_logger():
    """librdkafka logs connection errors to stderr; route them to Python logging instead."""
    import logging

    return logging.getLogger("cdc.status.kafka")
