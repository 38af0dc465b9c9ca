"""`cdc status`: the pipeline's health on one screen, and an exit code for cron and monitors.

Exit 0 when healthy; 1 when anything is wrong (a task FAILED, the connector or slot missing or not
running, WAL retained / consumer lag / freshness above the thresholds given, a service unreachable).
"""

from __future__ import annotations

import logging

import click
import orjson
from rich import box
from rich.console import Console, Group, RenderableType
from rich.filesize import decimal as human_bytes
from rich.table import Table
from rich.text import Text

from cdc_cli.commands.options import (
    cassandra_options,
    cassandra_settings,
    connect_url_option,
    kafka_option,
    pg_dsn_option,
    postgres_settings,
    settings,
)
from cdc_consumer.config import KafkaSettings
from cdc_consumer.secrets import mask_deep, mask_text
from connectors.connect_client import RUNNING, trace_head
from connectors.health import (
    DEFAULT_GROUP,
    DEFAULT_MAX_WAL_BYTES,
    PARTS,
    ClusterHealth,
    ConnectorHealth,
    ConsumerHealth,
    HealthReport,
    SinkHealth,
    SlotHealth,
    Targets,
    Thresholds,
    gather,
)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (for machines).")
@click.option("--connector", "connector_name", envvar="CDC_CONNECTOR_NAME", default="cdc-postgres",
              show_default=True, help="Debezium connector to check.")
@click.option("--group", envvar="CDC_CONSUMER_GROUP", default=DEFAULT_GROUP, show_default=True,
              help="Sink consumer group whose lag is reported.")
@click.option("--max-wal-bytes", type=click.IntRange(min=0), default=DEFAULT_MAX_WAL_BYTES, show_default=True,
              help="Unhealthy when the slot retains more WAL than this.")
@click.option("--max-lag", type=click.IntRange(min=0), default=None,
              help="Unhealthy when the consumer group lags more messages than this (default: report only).")
@click.option("--max-freshness-s", type=click.FloatRange(min=0), default=None,
              help="Unhealthy when the newest Cassandra row is older than this (default: report only).")
@click.option("--skip", multiple=True, type=click.Choice(PARTS),
              help="Leave a part out (repeatable), e.g. --skip cassandra before the sink exists.")
@connect_url_option
@pg_dsn_option
@kafka_option
@cassandra_options
def status(as_json: bool, connector_name: str, group: str, max_wal_bytes: int, max_lag: int | None,
           max_freshness_s: float | None, skip: tuple[str, ...], connect_url: str, pg_dsn: str, kafka: KafkaSettings,
           cassandra_hosts: str, cassandra_keyspace: str) -> None:
    """Connector and tasks, replication slot, consumer lag, Cassandra freshness — and whether all is well."""
    logging.getLogger("cassandra").setLevel(logging.ERROR)  # driver chatter would break the one screen
    targets = Targets(
        connector=connector_name, connect_url=connect_url,
        postgres=postgres_settings(pg_dsn), kafka_bootstrap=kafka.bootstrap, group=group,
        cassandra=cassandra_settings(cassandra_hosts, cassandra_keyspace),
        skip=frozenset(skip), kafka=kafka, connect_auth=settings().connect_auth)
    report = gather(targets, Thresholds(max_wal_bytes, max_lag, max_freshness_s))
    report.problems = [mask_text(problem) for problem in report.problems]
    if as_json:
        click.echo(orjson.dumps(mask_deep(report.to_dict()), option=orjson.OPT_INDENT_2).decode())
    else:
        Console(highlight=False).print(render(report))
    raise SystemExit(0 if report.healthy else 1)


# --- rendering (pure: report in, renderables out) --------------------------------------------------

def render(report: HealthReport) -> Group:
    parts: list[RenderableType] = [_headline(report)]
    for section in (connector_table(report.connector), _slot_table(report.slot),
                    _consumer_table(report.consumer), _sink_table(report.sink), *_cluster_tables(report.cluster)):
        if section is not None:
            parts.append(section)
    if report.problems:
        parts.append(Text("Problems:", style="bold red"))
        parts += [Text(f"  - {p}", style="red") for p in report.problems]
    return Group(*parts)


def _headline(report: HealthReport) -> Text:
    when = report.checked_at.strftime("%Y-%m-%d %H:%M:%S UTC")
    if report.healthy:
        return Text.assemble(("HEALTHY", "bold green"), f"  checked {when}")
    return Text.assemble((f"UNHEALTHY ({len(report.problems)} problem(s))", "bold red"), f"  checked {when}")


def _table(title: str, *columns: str) -> Table:
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for column in columns:
        table.add_column(column)
    return table


def _state(state: str) -> Text:
    return Text(state, style="green" if state == RUNNING else "red" if state == "FAILED" else "yellow")


def _error(table: Table, message: str) -> Table:
    table.add_row(Text(message, style="red"), *[""] * (len(table.columns) - 1))
    return table


def connector_table(c: ConnectorHealth | None) -> Table | None:
    if c is None:
        return None
    table = _table(f"Connector {c.name}", "", "state", "worker", "trace")
    if c.error:
        return _error(table, c.error)
    if c.missing or c.state is None:
        return _error(table, "does not exist")
    table.add_row("connector", _state(c.state.state), c.state.worker_id, trace_head(c.state.trace, 3))
    for task in c.state.tasks:
        table.add_row(f"task {task.id}", _state(task.state), task.worker_id, trace_head(task.trace, 3))
    return table


def _slot_table(s: SlotHealth | None) -> Table | None:
    if s is None:
        return None
    table = _table(f"Replication slot {s.name}", "active", "wal_status", "WAL retained")
    if s.error:
        return _error(table, s.error)
    if not s.exists:
        return _error(table, "does not exist")
    retained = "?" if s.retained_bytes is None else human_bytes(s.retained_bytes)
    if (s.retained_bytes or 0) >= 1000:
        retained += f" ({s.retained_bytes} B)"
    table.add_row(Text(str(s.active).lower(), style="green" if s.active else "red"), s.wal_status or "?", retained)
    return table


def _consumer_table(c: ConsumerHealth | None) -> Table | None:
    if c is None:
        return None
    table = _table(f"Consumer group {c.group} (total lag {c.total_lag})", "topic", "partition", "committed",
                   "end", "lag")
    if c.error:
        return _error(table, c.error)
    for p in c.partitions:
        table.add_row(p.topic, str(p.partition), "-" if p.committed is None else str(p.committed), str(p.end),
                      Text(str(p.lag), style="yellow" if p.lag else ""))
    for topic in c.missing_topics:
        table.add_row(topic, "", "", "", Text("no topic yet", style="dim"))
    for pause in c.pauses:
        table.add_row(Text(f"PAUSED ({pause['reason']})", style="bold yellow"), f"pid {pause['pid']}", "", "",
                      Text(pause["message"][:80], style="yellow"))
    return table


def _sink_table(s: SinkHealth | None) -> Table | None:
    if s is None:
        return None
    freshness = "no rows" if s.freshness_s is None else f"{s.freshness_s:.1f}s"
    table = _table(f"Cassandra keyspace {s.keyspace} (end-to-end freshness {freshness})", "table", "time column",
                   "newest row", "age")
    if s.error:
        return _error(table, s.error)
    for t in s.tables:
        if t.missing:
            table.add_row(t.table, "", Text("missing", style="red"), "")
            continue
        newest = t.newest.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] if t.newest else (t.error or "no rows")
        table.add_row(t.table, t.time_column or "-", newest, "" if t.age_s is None else f"{t.age_s:.1f}s")
    return table


def _cluster_tables(c: ClusterHealth | None) -> list[Table]:
    if c is None:
        return []
    meets = ("?" if c.required_replicas is None else
             f"{c.fewest_live_replicas} of {c.replication_factor} replicas up per range at worst, "
             f"{c.required_replicas} needed")
    nodes = _table(f"Cassandra nodes ({c.consistency}: {meets})", "node", "dc", "rack", "state")
    if c.cassandra_error:
        _error(nodes, c.cassandra_error)
    for n in c.nodes:
        nodes.add_row(n.address, n.datacenter or "?", n.rack or "?",
                      Text("UP", style="green") if n.up else Text("DOWN", style="bold red"))
    brokers = _table(f"Kafka brokers {c.brokers} ({len(c.under_replicated)} under-replicated partition(s))",
                     "partition", "state")
    if c.kafka_error:
        _error(brokers, c.kafka_error)
    unwritable = set(c.unwritable)
    for line in c.under_replicated[:20]:
        brokers.add_row(line, Text("not writable", style="bold red") if any(u.startswith(line.split(" ")[0] + " ")
                                                                          for u in unwritable)
                        else Text("under-replicated", style="yellow"))
    return [nodes, brokers]
