"""`cdc exporter`: usage errors exit 2; with PostgreSQL unreachable a scrape says so
(cdc_exporter_postgres_up 0) and carries no slot series rather than failing. The slot figures themselves are
checked against a real PostgreSQL in tests/integration/test_monitoring.py."""

from __future__ import annotations

import socket

from click.testing import CliRunner
from prometheus_client import CollectorRegistry, generate_latest

from cdc_cli.cli import main
from cdc_consumer.config import PostgresSettings
from connectors.slot_metrics import ReplicationSlotCollector


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_metrics_port_is_required():
    result = CliRunner().invoke(main, ["exporter"])
    assert result.exit_code == 2
    assert "Missing option '--metrics-port'" in result.output


def test_an_unreachable_postgres_is_reported_in_the_scrape_without_its_password():
    registry = CollectorRegistry()
    dsn = f"postgresql://cdc@127.0.0.1:{closed_port()}/cdc"
    registry.register(ReplicationSlotCollector(PostgresSettings(dsn, password="s3cret-pw"), timeout=2))
    text = generate_latest(registry).decode()
    assert "cdc_exporter_postgres_up 0.0" in text
    assert "cdc_replication_slot_retained_wal_bytes{" not in text
    assert "cdc_replication_slot_active{" not in text
    assert "s3cret-pw" not in text
