"""`cdc exporter`: Prometheus metrics of what no pipeline process owns — PostgreSQL's replication slots.

A verb of its own rather than part of `cdc consume`: the consumer does not talk to PostgreSQL, several
consumers would export the same slot, and the WAL alerts must keep working while the consumer is down.
"""

from __future__ import annotations

import logging
import signal
import threading

import click
from prometheus_client import CollectorRegistry, start_http_server

from cdc_cli.commands.options import pg_dsn_option, postgres_settings
from connectors.slot_metrics import ReplicationSlotCollector

log = logging.getLogger(__name__)


@click.command()
@pg_dsn_option
@click.option("--metrics-port", type=click.IntRange(1, 65535), required=True,
              help="Serve Prometheus metrics on 127.0.0.1:PORT/metrics.")
def exporter(pg_dsn: str, metrics_port: int) -> None:
    """Export replication-slot metrics (retained WAL, active) until SIGTERM/Ctrl-C; read at every scrape."""
    registry = CollectorRegistry()
    registry.register(ReplicationSlotCollector(postgres_settings(pg_dsn)))
    try:
        start_http_server(metrics_port, addr="127.0.0.1", registry=registry)
    except OSError as exc:
        raise click.UsageError(f"--metrics-port {metrics_port}: {exc.strerror or exc}") from exc
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    log.info("exporting replication-slot metrics on http://127.0.0.1:%d/metrics", metrics_port)
    stop.wait()
