"""`cdc register-connector`, `cdc connector status|pause|resume|restart|delete`, `cdc snapshot`."""

from __future__ import annotations

import contextlib
import os
import time
import uuid

import click
import orjson
import psycopg
from confluent_kafka import KafkaException
from psycopg import sql

from cdc_cli.commands.options import connect_client, connect_url_option, kafka_option, pg_dsn_option, settings
from cdc_consumer import kafka_clients, pg
from cdc_consumer.config import KafkaSettings, PostgresSettings
from cdc_consumer.identifiers import InvalidIdentifier, validate_identifier
from cdc_consumer.secrets import mask_url, redact
from connectors import slots
from connectors.config import (
    AVRO_TEMPLATE,
    DEFAULT_TEMPLATE,
    ConfigError,
    diff,
    load_template,
    parse_overrides,
    render,
    template_path,
)
from connectors.connect_client import (
    PAUSED,
    RUNNING,
    STOPPED,
    ConnectClient,
    ConnectError,
    ConnectorNotFound,
    ConnectorState,
    trace_head,
)
from connectors.topics import TopicPlan, table_topics

# Changing these on a live connector would mix two formats in its topics.
FORMAT_KEYS = ("key.converter", "value.converter")
FORMAT_TEMPLATES = {"json": DEFAULT_TEMPLATE, "avro": AVRO_TEMPLATE}


@contextlib.contextmanager
def service_errors():
    """Service failures become one clear line and exit status 1."""
    try:
        yield
    except (ConnectError, pg.ServiceUnavailable, slots.SlotBusy) as exc:
        raise click.ClickException(str(exc)) from exc
    except psycopg.Error as exc:
        raise click.ClickException(f"PostgreSQL: {str(exc).strip().splitlines()[0]}") from exc


def timeout_option(default: float):
    return click.option("--timeout", type=click.FloatRange(min=0), default=default, show_default=True,
                        help="Seconds to wait.")


# --- register --------------------------------------------------------------------------------------

@click.command("register-connector")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help="Connector template (default: the packaged one of --format).")
@click.option("--format", "fmt", type=click.Choice(sorted(FORMAT_TEMPLATES)), default=None,
              help="Packaged template: json (connectors/postgres.json, the default) or avro "
                   "(connectors/postgres-avro.json: Apicurio's converter, Confluent wire format, the registry "
                   "at CDC_REGISTRY_API_URL).")
@click.option("--name", default=None, help="Connector name (default: the template's, cdc-postgres).")
@connect_url_option
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a property after substitution (repeatable; empty value removes it).")
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="Wait until the connector and all its tasks are RUNNING.")
@timeout_option(120.0)
@click.option("--force", is_flag=True, help="Allow changing the converters of an existing connector.")
@click.option("--create-topics/--no-create-topics", default=True, show_default=True,
              help="Create each captured table's topic first (topic.creation.default.partitions / "
                   "replication.factor), so consumers see every topic before the first change.")
@kafka_option
def register_connector(config_file: str | None, fmt: str | None, name: str | None, connect_url: str,
                       overrides: tuple[str, ...], wait: bool, timeout: float, force: bool,
                       create_topics: bool, kafka: KafkaSettings) -> None:
    """Validate, then create or update the Debezium connector (idempotent)."""
    if config_file and fmt:
        raise click.UsageError("--config and --format both choose the template; give one of them")
    template = config_file or template_path(FORMAT_TEMPLATES[fmt or "json"])
    # The Avro template's converter talks to the registry's own API, derived from CDC_SCHEMA_REGISTRY_URL.
    env = {"CDC_REGISTRY_API_URL": settings().registry_api_url, **os.environ}
    try:
        desired = render(load_template(template), env, overrides=parse_overrides(overrides), name=name)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    client = connect_client(connect_url)
    with service_errors():
        validation = client.validate(desired.config)
        if not validation.ok:
            click.echo(f"connector {desired.name}: config rejected by {validation.connector_class} "
                       f"({len(validation.errors)} field error(s)):", err=True)
            for error in validation.errors:
                for message in error.messages:
                    click.echo(f"  {error.name}: {message}", err=True)
            raise SystemExit(1)
        if create_topics:
            _create_topics(kafka, table_topics(desired.config), min(timeout, 30.0))
        current = client.get_config(desired.name)
        changes = diff(current, desired.config)
        if current is not None and not changes:
            click.echo(f"connector {desired.name} unchanged")
        else:
            _refuse_format_change(desired.name, current, changes, force)
            created = client.put_config(desired.name, desired.config)
            if created or current is None:
                click.echo(f"connector {desired.name} created")
            else:
                click.echo(f"connector {desired.name} updated ({len(changes)} change(s)):")
                for change in changes:
                    click.echo(f"  {change.describe()}")
        if wait:
            _wait_running(client, desired.name, timeout, changes if current is not None else [])


def _create_topics(kafka: KafkaSettings, plan: TopicPlan, timeout: float) -> None:
    """The captured tables' topics before the connector's first change (through the admin client of the
    environment's and --kafka-config's settings). Kafka refusing is not fatal: Debezium then creates each
    topic with its table's first change, as without this step (a warning says so)."""
    try:
        kafka_clients.probe(kafka, timeout=timeout)  # a refused login or TLS failure: named within seconds
        outcome = kafka_clients.ensure_topics(kafka_clients.admin(kafka), plan.topics, partitions=plan.partitions,
                                              replication=plan.replication, timeout=timeout)
    except (kafka_clients.KafkaConfigError, kafka_clients.KafkaUnavailable, KafkaException) as exc:
        click.echo(f"warning: topics not created beforehand ({redact(str(exc), kafka.secrets)}); Debezium "
                   "creates each with its table's first change, and consumers find it at their next metadata "
                   "refresh", err=True)
        return
    created = sorted(t for t, state in outcome.items() if state == "created")
    if created:
        click.echo(f"topics created ({plan.partitions} partitions, replication {plan.replication}): "
                   f"{', '.join(created)}")
    for entry in plan.left_to_debezium:
        click.echo(f"table.include.list entry {entry!r} is a pattern: its topics are created by Debezium", err=True)


def _refuse_format_change(name: str, current, changes, force: bool) -> None:
    changed = [c.key for c in changes if c.key in FORMAT_KEYS]
    if current is not None and changed and not force:
        raise click.ClickException(
            f"connector {name}: changing {', '.join(changed)} would mix two formats in its topics; "
            "register under another name and topic.prefix, or pass --force")


def _wait_running(client: ConnectClient, name: str, timeout: float, changes=()) -> ConnectorState:
    """Until the connector and its tasks run (after an update: the tasks reconfigured with the changes)."""
    started = time.monotonic()
    state = None
    while True:
        with contextlib.suppress(ConnectorNotFound):  # status is 404 for a moment after creation
            reconfigured = not changes or _tasks_reconfigured(client.task_configs(name), changes)
            state = client.status(name)
            if state.failures:
                _report_failures(state)
                raise SystemExit(1)
            if reconfigured and state.running:
                click.echo(f"connector {name} RUNNING ({len(state.tasks)} task(s)) "
                           f"after {time.monotonic() - started:.1f}s")
                return state
        if time.monotonic() - started >= timeout:
            seen = f"connector {state.state}, tasks {[t.state for t in state.tasks]}" if state else "no status"
            raise click.ClickException(f"connector {name} not RUNNING after {timeout:g}s ({seen})")
        time.sleep(0.2)


def _tasks_reconfigured(task_configs: list[dict[str, str]], changes) -> bool:
    return bool(task_configs) and all(t.get(c.key) == c.new for t in task_configs for c in changes)


def _report_failures(state: ConnectorState) -> None:
    for what, trace in state.failures:
        click.echo(f"{what} FAILED:", err=True)
        for line in trace_head(trace).splitlines():
            click.echo(f"  {line}", err=True)


# --- operations on one connector -------------------------------------------------------------------

@click.group()
def connector() -> None:
    """Operate a registered connector: status, pause, resume, restart, delete."""


@connector.command("status")
@click.argument("name")
@connect_url_option
def connector_status(name: str, connect_url: str) -> None:
    """Show the connector's and its tasks' states; exit 0 only when all are RUNNING."""
    from rich.console import Console

    from cdc_cli.commands.status import connector_table
    from connectors.health import ConnectorHealth

    with service_errors():
        state = connect_client(connect_url).status(name)
    Console(highlight=False).print(connector_table(ConnectorHealth(name, state)))
    if state.failures:
        _report_failures(state)
    if not state.running:
        raise SystemExit(1)


@connector.command("pause")
@click.argument("name")
@connect_url_option
@timeout_option(30.0)
def connector_pause(name: str, connect_url: str, timeout: float) -> None:
    """Pause the connector and its tasks (the slot stays; WAL accumulates until resumed)."""
    _change_state(connect_client(connect_url), name, "pause", PAUSED, timeout)


@connector.command("resume")
@click.argument("name")
@connect_url_option
@timeout_option(30.0)
def connector_resume(name: str, connect_url: str, timeout: float) -> None:
    """Resume a paused connector."""
    _change_state(connect_client(connect_url), name, "resume", RUNNING, timeout)


def _change_state(client: ConnectClient, name: str, action: str, target: str, timeout: float) -> None:
    with service_errors():
        getattr(client, action)(name)
        _await_state(client, name, target, timeout)
    click.echo(f"connector {name} {target}")


def _await_state(client: ConnectClient, name: str, target: str, timeout: float) -> None:
    """Until the connector and every task report `target` (a STOPPED connector has no tasks)."""
    deadline = time.monotonic() + timeout
    while True:
        state = client.status(name)
        if state.state == target and all(t.state == target for t in state.tasks):
            return
        # A FAILED task ends the wait for RUNNING; while stopping, it is what is being stopped (a task whose
        # connector is STOPPED is gone), so deleting a failed connector still stops it first.
        if (state.failures and target != STOPPED) or time.monotonic() >= deadline:
            _report_failures(state)
            raise click.ClickException(f"connector {name} did not reach {target} (is {state.state})")
        time.sleep(0.2)


@connector.command("restart")
@click.argument("name")
@connect_url_option
@click.option("--all", "all_tasks", is_flag=True,
              help="Restart the connector and every task, running ones too (default: only what FAILED).")
def connector_restart(name: str, connect_url: str, all_tasks: bool) -> None:
    """Restart the connector and its tasks that FAILED (Connect's onlyFailed=true: a RUNNING one is left as it is).

    With --all, the connector and every task restart (onlyFailed=false), e.g. to reopen the replication
    connection of a task that runs but is stuck.
    """
    with service_errors():
        connect_client(connect_url).restart(name, include_tasks=True, only_failed=not all_tasks)
    click.echo(f"connector {name}: restart requested (connector and {'all' if all_tasks else 'failed'} tasks)")


@connector.command("delete")
@click.argument("name")
@connect_url_option
@pg_dsn_option
@click.option("--drop-slot", is_flag=True, help="Also drop the connector's replication slot in PostgreSQL.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@timeout_option(60.0)
def connector_delete(name: str, connect_url: str, pg_dsn: str, drop_slot: bool, yes: bool, timeout: float) -> None:
    """Delete the connector.

    Without --drop-slot the slot and Connect's stored offsets stay, so registering the connector again
    resumes where it stopped. With --drop-slot the slot is dropped and the offsets (positions in that
    slot's stream) are reset as well, so a connector registered again under this name starts afresh
    with its initial snapshot instead of failing on a position the server no longer has.
    """
    client = connect_client(connect_url)
    with service_errors():
        config = client.get_config(name)
        if config is None:
            raise click.ClickException(f"connector {name} does not exist on {mask_url(connect_url)}")
        slot = config.get("slot.name", "")
        what = f"connector {name}" + (f" and replication slot {slot}" if drop_slot else "")
        if drop_slot and not slot:
            raise click.ClickException(f"connector {name} has no slot.name to drop")
        if not yes:
            click.confirm(f"Delete {what}?", abort=True)
        if drop_slot:
            client.stop(name)
            _await_state(client, name, STOPPED, timeout)
            client.reset_offsets(name)
        client.delete(name)
        click.echo(f"connector {name} deleted" + (" (offsets reset)" if drop_slot else ""))
        if drop_slot:
            with pg.connect(PostgresSettings(pg_dsn, settings().postgres.password), autocommit=True) as conn:
                dropped = slots.drop_slot(conn, slot, timeout=timeout)
            click.echo(f"replication slot {slot} " + ("dropped" if dropped else "did not exist"))


# --- snapshot --------------------------------------------------------------------------------------

@click.command()
@click.option("--table", "tables", multiple=True, required=True, metavar="SCHEMA.TABLE",
              help="Table to re-snapshot (repeatable), e.g. public.klines.")
@click.option("--type", "snapshot_type", type=click.Choice(["incremental", "blocking"]), default="incremental",
              show_default=True, help="Debezium snapshot type.")
@click.option("--signal-table", default="public.cdc_signal", show_default=True,
              help="The connector's signal.data.collection.")
@pg_dsn_option
def snapshot(tables: tuple[str, ...], snapshot_type: str, signal_table: str, pg_dsn: str) -> None:
    """Re-emit the current rows of tables into Kafka (as `op r` events) without stopping the pipeline.

    Inserts an `execute-snapshot` signal into the connector's signal table; Debezium reads it from the
    replication stream and snapshots the tables in chunks while streaming goes on.
    """
    try:
        collections = [_qualified(t, "--table") for t in tables]
        signal = _qualified(signal_table, "--signal-table")
    except InvalidIdentifier as exc:
        raise click.UsageError(str(exc)) from exc
    data = orjson.dumps({"data-collections": [".".join(c) for c in collections], "type": snapshot_type}).decode()
    signal_id = str(uuid.uuid4())
    statement = sql.SQL("INSERT INTO {} (id, type, data) VALUES (%s, %s, %s)").format(sql.Identifier(*signal))
    with service_errors(), pg.connect(PostgresSettings(pg_dsn, settings().postgres.password),
                                      autocommit=True) as conn:
        conn.execute(statement, (signal_id, "execute-snapshot", data))
    click.echo(f"{snapshot_type} snapshot of {', '.join('.'.join(c) for c in collections)} requested "
               f"(signal {signal_id})")


def _qualified(name: str, option: str) -> tuple[str, str]:
    parts = name.split(".")
    if len(parts) != 2:
        raise InvalidIdentifier(f"{option} {name!r}: expected schema.table, e.g. public.klines")
    return (validate_identifier(parts[0], what=f"schema in {option} {name!r}"),
            validate_identifier(parts[1], what=f"table in {option} {name!r}"))
