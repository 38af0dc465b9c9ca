"""Replication-slot state as Prometheus metrics, read from PostgreSQL at each scrape.

A prometheus-client custom collector: every scrape runs the same pg_replication_slots query as
`cdc status` (connectors.slots), so the figures are as fresh as the scrape and nothing polls in between.
Every slot of the server is exported, not only the connector's: a forgotten slot is exactly the one that
retains WAL until the disk is full. When PostgreSQL cannot be queried, `cdc_exporter_postgres_up` is 0 and
the slot series are absent for that scrape (no stale value is repeated).
"""

from __future__ import annotations

import logging

import psycopg
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from cdc_consumer import pg
from cdc_consumer.config import PostgresSettings
from connectors import slots

log = logging.getLogger(__name__)


class ReplicationSlotCollector(Collector):
    def __init__(self, postgres: PostgresSettings, *, timeout: int = 3) -> None:
        self.postgres = postgres
        self.timeout = timeout

    def collect(self):
        up = GaugeMetricFamily("cdc_exporter_postgres_up", "1 when this scrape could read pg_replication_slots")
        try:
            with pg.connect(self.postgres, autocommit=True, timeout=self.timeout) as conn:
                states = slots.all_slot_states(conn)
        except (pg.ServiceUnavailable, psycopg.Error) as exc:
            log.warning("replication slots not read: %s", str(exc).strip().splitlines()[0] if str(exc).strip()
                        else type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        retained = GaugeMetricFamily("cdc_replication_slot_retained_wal_bytes", "WAL the slot makes PostgreSQL "
                                     "keep: current LSN minus the confirmed flush LSN", labels=["slot"])
        active = GaugeMetricFamily("cdc_replication_slot_active", "1 while a replication connection reads the "
                                   "slot", labels=["slot"])
        for state in states:
            active.add_metric([state.name], 1 if state.active else 0)
            if state.retained_bytes is not None:
                retained.add_metric([state.name], state.retained_bytes)
        yield retained
        yield active
