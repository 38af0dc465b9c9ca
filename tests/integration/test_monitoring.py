"""Monitoring on the real stack: Prometheus scrapes `cdc consume`, `cdc poll`, `cdc exporter` and the JMX
exporters of Kafka, Connect/Debezium and Cassandra; the pipeline alert rules reach Alertmanager; every
PromQL query of the Grafana dashboards returns series.

Prometheus finds the cdc processes of a test through a file_sd target file the test writes (and removes).
Alert latencies are printed (run with -s) and bounded by the configured intervals. The latest moment an
alert can be active in Alertmanager after its cause: the first scrape that sees it (up to one scrape
interval), the first rule evaluation after that scrape (up to one evaluation interval: `for` starts there),
`for` itself, checked only at evaluations (up to one more evaluation interval), then Prometheus' push and
Alertmanager's ingestion (DELIVERY_SLACK_S). The issue's "for + scrape interval" leaves out the two
evaluation steps and the delivery, so it cannot hold in the worst case whatever `for` is.
"""

from __future__ import annotations

import signal
import subprocess
import time

import psycopg
import pytest

from cdc_consumer import schema
from ingest.sim import SimServer
from tests.e2e.pipeline import Pipeline
from tests.integration.consume_support import produce
from tests.integration.monitoring_support import (
    active_alerts,
    alertmanager_url,
    dashboard_queries,
    evaluation_interval,
    expand_macros,
    free_port,
    metrics_answer,
    prometheus_url,
    query,
    require_ready,
    rule_for,
    scrape_interval,
    scrape_target,
    start_cdc,
    stop,
    values,
)
from tests.integration.tcp_proxy import TcpProxy
from tests.support import delete_pipeline_topics, unique_name, wait_until

pytestmark = pytest.mark.integration

NOTIFY_SLACK_S = 2.0  # Prometheus -> Alertmanager, and a busy machine
DELIVERY_SLACK_S = 1.0  # Prometheus' push of a firing alert and Alertmanager's ingestion of it
# Creating and dropping the test keyspace's tables can outlast the driver's 10 s on a busy machine.
SCHEMA_TIMEOUT_S = 60


@pytest.fixture(scope="module")
def prometheus() -> str:
    return require_ready("Prometheus", prometheus_url())


@pytest.fixture(scope="module")
def alertmanager() -> str:
    return require_ready("Alertmanager", alertmanager_url())


def consume_args(port: int, keyspace: str, group: str, topics: str) -> list[str]:
    return ["consume", "--group", group, "--topics", topics, "--cassandra-keyspace", keyspace,
            "--metrics-port", str(port), "--progress-every", "2", "--drain-timeout", "10"]


def test_consumer_down_alert_is_active_in_alertmanager_within_its_budget_and_resolves(
        prometheus, alertmanager, kafka_bootstrap, cassandra_session, tmp_path):
    cassandra_session.cluster.profile_manager.default.request_timeout = SCHEMA_TIMEOUT_S
    keyspace = cassandra_session.keyspace
    schema.apply_cql(cassandra_session, keyspace)
    port = free_port()
    args = consume_args(port, keyspace, unique_name("g"), f"^{unique_name('none')}$")
    budget = rule_for("CdcConsumerDown") + scrape_interval("cdc-consume") + 2 * evaluation_interval() + DELIVERY_SLACK_S
    with scrape_target("cdc-consume", port) as instance:
        consumer = start_cdc(tmp_path / "consume-1.log", *args)
        try:
            wait_until(lambda: values(prometheus, f'up{{job="cdc-consume", instance="{instance}"}}') == [1.0],
                       timeout=90, what="Prometheus to scrape the consumer")
            assert active_alerts(alertmanager, "CdcConsumerDown", instance=instance) == []

            consumer.send_signal(signal.SIGKILL)
            consumer.wait(30)
            stopped = time.monotonic()
            alerts = wait_until(lambda: active_alerts(alertmanager, "CdcConsumerDown", instance=instance),
                                timeout=budget + 30, interval=0.2, what="CdcConsumerDown in Alertmanager")
            fired_after = time.monotonic() - stopped
            assert alerts[0]["labels"]["severity"] == "critical" and alerts[0]["labels"]["job"] == "cdc-consume"

            consumer = start_cdc(tmp_path / "consume-2.log", *args)
            wait_until(lambda: metrics_answer(port), timeout=90, what="the restarted consumer's /metrics")
            back = time.monotonic()
            wait_until(lambda: active_alerts(alertmanager, "CdcConsumerDown", instance=instance) == [],
                       timeout=60, interval=0.2, what="CdcConsumerDown to resolve")
            resolved_after = time.monotonic() - back
        finally:
            stop(consumer)
    print(f"\nCdcConsumerDown: active in Alertmanager {fired_after:.1f} s after the consumer was killed "
          f"(budget {budget:.0f} s); resolved {resolved_after:.1f} s after it served metrics again")
    assert fired_after <= budget, f"alert after {fired_after:.1f} s, budget {budget:.1f} s"
    assert resolved_after <= scrape_interval("cdc-consume") + evaluation_interval() + NOTIFY_SLACK_S + 1


def test_exporter_reports_a_slot_and_the_wal_it_retains(prometheus, pg_database, tmp_path):
    slot = unique_name("mon_slot")
    port = free_port()
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
        exporter = start_cdc(tmp_path / "exporter.log", "exporter", "--pg-dsn", pg_database,
                             "--metrics-port", str(port))
        try:
            with scrape_target("cdc-exporter", port):
                wait_until(lambda: values(prometheus, f'cdc_replication_slot_active{{slot="{slot}"}}') == [0.0],
                           timeout=60, what="the slot's series in Prometheus")
                # WAL written after the slot was created: the slot must retain at least that much.
                before = conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
                conn.execute("CREATE TABLE filler AS SELECT g, repeat('x', 200) AS pad FROM generate_series(1, 20000) g")
                written = conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)::bigint",
                                       (before,)).fetchone()[0]
                assert written > 1_000_000
                wait_until(lambda: values(prometheus, f'cdc_replication_slot_retained_wal_bytes{{slot="{slot}"}}')
                           [0] >= written, timeout=60, what=f"retained WAL >= {written} bytes in Prometheus")
                assert values(prometheus, 'cdc_exporter_postgres_up{job="cdc-exporter"}')[:1] == [1.0]
        finally:
            stop(exporter)
            conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))


def test_every_dashboard_query_returns_series_from_the_running_pipeline(
        prometheus, pg_database, cassandra_session, kafka_bootstrap, connect_url, tmp_path):
    """A real pipeline (simulator -> poll -> PostgreSQL -> Debezium -> Kafka -> consume -> Cassandra, plus the
    exporter) with one undecodable record (DLQ), a tombstone (skipped) and a Cassandra outage (paused, write retries) for the
    consumer, so every series the dashboards and alert rules read exists."""
    queries = dashboard_queries()
    assert len(queries) >= 19  # the pipeline-health panels at least
    with psycopg.connect(pg_database) as conn:
        schema.apply_sql(conn)
    cassandra_session.cluster.profile_manager.default.request_timeout = SCHEMA_TIMEOUT_S
    keyspace = cassandra_session.keyspace
    schema.apply_cql(cassandra_session, keyspace)
    pipeline = Pipeline(pg_database, keyspace, tmp_path)
    pipeline.register()
    ports = {job: free_port() for job in ("cdc-consume", "cdc-poll", "cdc-exporter")}
    proxy = TcpProxy(("127.0.0.1", cassandra_session.cluster.port)).start()
    processes = []
    try:
        with SimServer(symbols=5, seed=11, tick_s=0.5) as sim, \
                scrape_target("cdc-consume", ports["cdc-consume"]), scrape_target("cdc-poll", ports["cdc-poll"]), \
                scrape_target("cdc-exporter", ports["cdc-exporter"]):
            processes.append(start_cdc(tmp_path / "poll.log", "poll", "--symbols", "BTCUSDT,ETHUSDT",
                                       "--interval", "1s", "--klines", "1m", "--depth", "5", "--trades", "10",
                                       "--pg-dsn", pg_database, "--base-url", sim.url,
                                       "--metrics-port", str(ports["cdc-poll"])))
            processes.append(start_cdc(tmp_path / "consume.log",
                                       *consume_args(ports["cdc-consume"], keyspace, pipeline.group,
                                                     pipeline.topics_regex),
                                       env={"CDC_CASSANDRA_PORT": str(proxy.port)}))
            processes.append(start_cdc(tmp_path / "exporter.log", "exporter", "--pg-dsn", pg_database,
                                       "--metrics-port", str(ports["cdc-exporter"])))
            instance = f"127.0.0.1:{ports['cdc-consume']}"
            wait_until(lambda: values(prometheus, f'sum(cdc_events_applied_total{{instance="{instance}"}})')
                       [0] > 0, timeout=180, interval=1, what="changes applied by the consumer, in Prometheus")
            # One undecodable record (DLQ) and one tombstone (skipped).
            produce(kafka_bootstrap, pipeline.topic("ticker_24h"), [(None, b"not a change event"), (None, None)])
            wait_until(lambda: values(prometheus, f'sum(cdc_events_dlq_total{{instance="{instance}"}})') and
                       values(prometheus, f'sum(cdc_events_skipped_total{{instance="{instance}"}})'),
                       timeout=60, interval=1, what="the DLQ record and the skipped tombstone in Prometheus")
            proxy.cut()  # Cassandra goes away for this consumer only: it pauses and retries
            wait_until(lambda: values(prometheus, f'sum(cdc_write_retries_total{{instance="{instance}"}})'),
                       timeout=120, interval=1, what="write retries in Prometheus")
            # The driver's reconnect attempts can hold the proxy's (ephemeral-range) port for a moment.
            wait_until(proxy.start, timeout=60, interval=0.5, what="the Cassandra proxy to listen again")

            def empty_queries() -> list[str]:
                return [f"{name} / {title}: {expr}" for name, title, expr in queries
                        if not query(prometheus, expand_macros(expr))]

            try:
                wait_until(lambda: not empty_queries(), timeout=120, interval=2,
                           what="every dashboard query to return series")
            except AssertionError:
                raise AssertionError("dashboard queries without series:\n" + "\n".join(empty_queries())) from None
            assert_contract_series(prometheus, pipeline)
    finally:
        proxy.cut()
        for process in processes:
            stop(process)
        pipeline.delete_connector()
        delete_pipeline_topics(kafka_bootstrap, pipeline.prefix)


def assert_contract_series(prometheus: str, pipeline: Pipeline) -> None:
    """The metric names the branches agreed on exist with sensible values (the alert rules read them)."""
    server = pipeline.prefix
    wait_until(lambda: values(prometheus, f'debezium_postgres_streaming_connected{{server="{server}"}}') == [1.0],
               timeout=60, what="Debezium's Connected = 1 from the Connect JMX exporter")
    behind = values(prometheus, f'debezium_postgres_streaming_milliseconds_behind_source{{server="{server}"}}')
    assert len(behind) == 1 and behind[0] < 60_000
    assert values(prometheus, f'debezium_postgres_streaming_queue_remaining_capacity{{server="{server}"}}')[0] > 0
    connector = pipeline.name
    assert values(prometheus, f'kafka_connect_connector_tasks{{connector="{connector}", state="running"}}') == [1.0]
    assert values(prometheus, f'kafka_connect_connector_status{{connector="{connector}", status="running"}}') == [1.0]
    assert values(prometheus, f'sum(kafka_server_brokertopicmetrics_messagesin_total{{topic=~"{server}\\\\..*"}})')[0] > 0
    assert values(prometheus, 'sum(cassandra_clientrequest_requests_total{operation="Write"})')[0] > 0
    assert values(prometheus, 'sum(cdc_poller_cycles_total)')[0] > 0
    assert values(prometheus, 'sum(cdc_poller_rows_written_total{table="ticker_24h"})')[0] > 0
    assert len(query(prometheus, 'cdc_poller_rate_limited_total{job="cdc-poll"}')) >= 2
    assert len(query(prometheus, 'cdc_poller_request_weight_used{job="cdc-poll"}')) >= 1
    assert len(query(prometheus, 'cdc_poller_failures_total{job="cdc-poll"}')) >= 1
    assert values(prometheus, f'cdc_replication_slot_active{{slot="{connector}"}}') == [1.0]
    assert values(prometheus, f'cdc_replication_slot_retained_wal_bytes{{slot="{connector}"}}')[0] >= 0


def test_the_stack_lists_prometheus_and_alertmanager_as_ready(prometheus, alertmanager):
    from tests.e2e.pipeline import STACK

    result = subprocess.run([STACK, "status", "prometheus", "alertmanager"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = {line.split()[0]: line.split() for line in result.stdout.splitlines()}
    # name, state, pid=N, host:port, ready, rss=NMB
    assert lines["prometheus"][3:5] == [prometheus.split("//")[1], "ready"], result.stdout
    assert lines["alertmanager"][3:5] == [alertmanager.split("//")[1], "ready"], result.stdout


def test_the_stack_lists_the_registry_as_ready(settings):
    from urllib.parse import urlparse

    from tests.e2e.pipeline import STACK

    registry = urlparse(settings.schema_registry_url)
    result = subprocess.run([STACK, "status", "registry"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = {line.split()[0]: line.split() for line in result.stdout.splitlines()}
    # name, state, pid=N, host:port, ready, rss=NMB
    assert lines["registry"][3:5] == [registry.netloc, "ready"], result.stdout


def test_stack_up_of_a_running_prometheus_reloads_its_configuration(prometheus):
    from tests.e2e.pipeline import STACK

    def last_reload() -> float:
        return values(prometheus, "prometheus_config_last_reload_success_timestamp_seconds")[0]

    before = last_reload()
    result = subprocess.run([STACK, "up", "prometheus"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    wait_until(lambda: last_reload() > before, timeout=30, what="Prometheus to reload its configuration")
    assert values(prometheus, "prometheus_config_last_reload_successful") == [1.0]
