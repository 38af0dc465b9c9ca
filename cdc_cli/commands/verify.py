"""`cdc verify`: does Cassandra hold exactly what PostgreSQL holds (through the mapping)?"""

from __future__ import annotations

import datetime as dt
import functools
import json
import sys

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cdc_cli.commands.options import cassandra_options, cassandra_settings, pg_dsn_option, postgres_settings
from cdc_consumer import cql_session, pg
from cdc_consumer import verify as verifier
from cdc_consumer.errors import MappingError
from cdc_consumer.identifiers import validate_identifier
from cdc_consumer.mapping import compile_mapping, describe_tables, load_mapping


def _since(value: str | None) -> dt.datetime | None:
    if value is None:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError as exc:
        raise click.BadParameter(f"{value!r} is not an ISO-8601 timestamp (e.g. 2026-11-21T10:00:00Z)") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


@click.command()
@click.option("--table", "tables", multiple=True,
              help="Source (public.klines) or Cassandra (klines_by_bucket) table; repeatable. Default: all mapped.")
@click.option("--since", help="Only rows whose key timestamp is at or after this ISO-8601 time.")
@click.option("--mapping", "mapping_file", type=click.Path(exists=True, dir_okay=False),
              help="Mapping YAML (default: the shipped mapping).")
@click.option("--samples", default=5, show_default=True, help="Differences shown per table.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--progress/--no-progress", default=True, help="Progress bar on stderr.")
@pg_dsn_option
@cassandra_options
def verify(tables: tuple[str, ...], since: str | None, mapping_file: str | None, samples: int, as_json: bool,
           progress: bool, pg_dsn: str, cassandra_hosts: str, cassandra_keyspace: str) -> None:
    """Compare PostgreSQL source tables with their Cassandra tables; exit 0 only when identical.

    Rows missing in Cassandra, extra rows, and rows whose values differ (decimals compared exactly) are
    counted per table, with samples. Streams in key order with bounded memory.

    \b
    Examples:
      cdc verify
      cdc verify --table public.klines --since 2026-11-21T00:00:00Z
    """
    since_ts = _since(since)
    try:
        keyspace = validate_identifier(cassandra_keyspace, what="keyspace")
        spec = load_mapping(mapping_file)
    except (MappingError, ValueError) as exc:
        raise click.UsageError(str(exc)) from exc
    try:
        cluster, session = cql_session.connect(cassandra_settings(cassandra_hosts, keyspace))
        conn = pg.connect(postgres_settings(pg_dsn))
    except pg.ServiceUnavailable as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        try:
            mapping = compile_mapping(spec, describe_tables(session, keyspace), keyspace=keyspace)
            plans = verifier.plans(mapping, tables)
        except (MappingError, verifier.VerifyError) as exc:
            raise click.UsageError(str(exc)) from exc
        reports = _run(conn, session, keyspace, plans, since_ts, samples, progress and not as_json)
    except verifier.VerifyError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        conn.close()
        cluster.shutdown()
    identical = all(r.identical for r in reports)
    if as_json:
        click.echo(json.dumps({"identical": identical, "tables": [_as_dict(r) for r in reports]}, default=str))
    else:
        _print(reports, identical)
    sys.exit(0 if identical else 1)


def _run(conn, session, keyspace, plans, since_ts, samples, show_progress) -> list[verifier.TargetReport]:
    reports = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), disable=not show_progress, transient=True) as bar:
        for plan in plans:
            task = bar.add_task(f"{plan.source_table} → {plan.writer.table}",
                                total=verifier.estimated_rows(conn, plan.source_table) or None)
            reports.append(verifier.verify_target(conn, session, keyspace, plan, since=since_ts,
                                                  sample_limit=samples,
                                                  progress=functools.partial(bar.advance, task)))
            conn.commit()  # close the cursor's snapshot between tables
    return reports


def _as_dict(report: verifier.TargetReport) -> dict:
    return {"source_table": report.source_table, "target": report.target, "identical": report.identical,
            "source_rows": report.source_rows, "target_rows": report.target_rows, "matched": report.matched,
            "missing": report.missing, "extra": report.extra, "differing": report.differing,
            "unmappable": report.unmappable, "samples": report.samples}


def _print(reports: list[verifier.TargetReport], identical: bool) -> None:
    console = Console()
    if not console.is_terminal:  # logs and pipes: do not squeeze the table into 80 columns
        console = Console(width=160)
    table = Table(title="cdc verify: PostgreSQL vs Cassandra")
    for name in ("source", "target", "source rows", "cassandra rows", "matched", "missing", "extra",
                 "differing", "unmappable", "ok"):
        table.add_column(name, justify="right" if name not in ("source", "target") else "left")
    for r in reports:
        table.add_row(r.source_table, r.target, str(r.source_rows), str(r.target_rows), str(r.matched),
                      str(r.missing), str(r.extra), str(r.differing), str(r.unmappable),
                      "[green]yes[/]" if r.identical else "[red]NO[/]")
    console.print(table)
    for r in reports:
        for s in r.samples:
            detail = {k: v for k, v in s.items() if k != "kind"}
            console.print(f"  {s['kind']}: {detail}", markup=False, highlight=False)
    console.print("[green]identical[/]" if identical else "[red]differences found[/]")
