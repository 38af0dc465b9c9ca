"""`cdc status`: judging gathered facts against thresholds, and the one-screen / JSON renderings."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from rich.console import Console

from cdc_cli.commands.status import render
from connectors.connect_client import ConnectorState, TaskState, trace_head
from connectors.health import (
    ConnectorHealth,
    ConsumerHealth,
    HealthReport,
    PartitionLag,
    SinkHealth,
    SlotHealth,
    TableFreshness,
    Thresholds,
    _pick_time_column,
    capture_settings,
    judge,
)

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
TRACE = ("org.apache.kafka.connect.errors.ConnectException: replication slot \"cdc_slot\" is active\n"
         "\tat io.debezium.connector.postgresql.PostgresConnectorTask.start(PostgresConnectorTask.java:1)\n"
         "\tat more.Frames(X.java:2)\n")


def running(name="cdc-postgres", tasks=1) -> ConnectorHealth:
    return ConnectorHealth(name, ConnectorState(name, "RUNNING", "w1", None,
                                                tuple(TaskState(i, "RUNNING", "w1") for i in range(tasks))))


def healthy_report(**parts) -> HealthReport:
    report = HealthReport(
        checked_at=NOW,
        connector=running(),
        slot=SlotHealth("cdc_slot", exists=True, active=True, wal_status="reserved", retained_bytes=1024),
        consumer=ConsumerHealth("cdc-consume", [PartitionLag("cdc.public.klines", 0, 10, 12, 2)]),
        sink=SinkHealth("market", [TableFreshness("ticker_by_day", "event_time", NOW - timedelta(seconds=3), 3.0),
                                   TableFreshness("klines_by_bucket", "open_time", NOW - timedelta(seconds=40), 40.0)]),
    )
    for name, value in parts.items():
        setattr(report, name, value)
    return report


def problems(report: HealthReport, **thresholds) -> list[str]:
    return judge(report, Thresholds(**thresholds))


def screen(report: HealthReport) -> str:
    console = Console(file=io.StringIO(), width=160, record=True, color_system=None)
    console.print(render(report))
    return console.export_text()


# --- judging ---------------------------------------------------------------------------------------

def test_everything_running_within_thresholds_is_healthy():
    assert problems(healthy_report(), max_wal_bytes=10_000, max_lag=5, max_freshness_s=10) == []


def test_a_failed_task_is_a_problem_quoting_its_exception():
    state = ConnectorState("cdc-postgres", "RUNNING", "w1", None, (TaskState(0, "FAILED", "w1", TRACE),))
    found = problems(healthy_report(connector=ConnectorHealth("cdc-postgres", state)))
    assert found == [('task 0 FAILED: org.apache.kafka.connect.errors.ConnectException: replication slot '
                     '"cdc_slot" is active')]


# A converter failure as Connect reports it: the registry's refusal is the innermost cause.
WRAPPED_TRACE = (
    "org.apache.kafka.connect.errors.ConnectException: Tolerance exceeded in error handler\n"
    "\tat org.apache.kafka.connect.runtime.errors.RetryWithToleranceOperator.execAndHandleError(R.java:1)\n"
    "Caused by: org.apache.kafka.connect.errors.DataException: Converting Kafka Connect data to byte[] failed\n"
    "\tat io.apicurio.registry.utils.converter.SerdeBasedConverter.fromConnectData(S.java:2)\n"
    "Caused by: io.apicurio.registry.rest.client.exception.RuleViolationException: Incompatible artifact: "
    "t-value [AVRO]\n"
    "\tat io.apicurio.registry.rest.client.impl.ErrorHandler.handleErrorResponse(E.java:3)\n")


def test_a_failed_task_wrapping_another_exception_names_the_root_cause_too():
    state = ConnectorState("cdc-postgres", "RUNNING", "w1", None, (TaskState(0, "FAILED", "w1", WRAPPED_TRACE),))
    found = problems(healthy_report(connector=ConnectorHealth("cdc-postgres", state)))
    assert found == ["task 0 FAILED: org.apache.kafka.connect.errors.ConnectException: Tolerance exceeded in error "
                     "handler (caused by io.apicurio.registry.rest.client.exception.RuleViolationException: "
                     "Incompatible artifact: t-value [AVRO])"]


def test_trace_head_ends_with_the_root_cause_once():
    assert trace_head(WRAPPED_TRACE, 2).splitlines() == [
        "org.apache.kafka.connect.errors.ConnectException: Tolerance exceeded in error handler",
        "\tat org.apache.kafka.connect.runtime.errors.RetryWithToleranceOperator.execAndHandleError(R.java:1)",
        "Caused by: io.apicurio.registry.rest.client.exception.RuleViolationException: Incompatible artifact: "
        "t-value [AVRO]"]
    assert trace_head(TRACE) == TRACE.strip()
    assert trace_head(WRAPPED_TRACE, 10) == WRAPPED_TRACE.strip()


def test_a_missing_connector_is_a_problem():
    assert problems(healthy_report(connector=ConnectorHealth("cdc-postgres", missing=True))) == [
        "connector cdc-postgres does not exist"]


def test_a_paused_connector_is_a_problem_because_changes_stop_flowing():
    state = ConnectorState("cdc-postgres", "PAUSED", "w1", None, (TaskState(0, "PAUSED", "w1"),))
    assert problems(healthy_report(connector=ConnectorHealth("cdc-postgres", state))) == [
        "connector cdc-postgres is PAUSED: changes are not flowing"]


def test_a_connector_without_tasks_is_a_problem():
    state = ConnectorState("cdc-postgres", "RUNNING", "w1", None, ())
    assert problems(healthy_report(connector=ConnectorHealth("cdc-postgres", state))) == [
        "connector cdc-postgres has no tasks"]


def test_unreachable_connect_is_a_problem_with_its_message():
    error = "Kafka Connect unreachable at http://127.0.0.1:8083: [Errno 111] Connection refused"
    assert problems(healthy_report(connector=ConnectorHealth("cdc-postgres", error=error))) == [error]


def test_missing_and_inactive_slots_are_problems():
    assert problems(healthy_report(slot=SlotHealth("cdc_slot"))) == ["replication slot cdc_slot does not exist"]
    inactive = SlotHealth("cdc_slot", exists=True, active=False, wal_status="reserved", retained_bytes=0)
    assert problems(healthy_report(slot=inactive)) == [
        "replication slot cdc_slot is inactive: nothing reads it and PostgreSQL keeps its WAL"]


def test_wal_retained_above_the_threshold_is_a_problem_and_at_the_threshold_is_not():
    slot = SlotHealth("cdc_slot", exists=True, active=True, wal_status="extended", retained_bytes=5000)
    assert problems(healthy_report(slot=slot), max_wal_bytes=5000) == []
    assert problems(healthy_report(slot=slot), max_wal_bytes=4999) == [
        "replication slot cdc_slot retains 5000 bytes of WAL (more than 4999)"]


@pytest.mark.parametrize("wal_status", ["unreserved", "lost"])
def test_a_slot_losing_its_wal_is_a_problem(wal_status):
    slot = SlotHealth("cdc_slot", exists=True, active=True, wal_status=wal_status, retained_bytes=0)
    assert any(wal_status in p for p in problems(healthy_report(slot=slot)))


def test_consumer_lag_is_judged_only_against_a_given_threshold():
    consumer = ConsumerHealth("cdc-consume", [PartitionLag("cdc.public.klines", 0, 0, 70, 70),
                                           PartitionLag("cdc.public.klines", 1, 5, 35, 30)])
    report = healthy_report(consumer=consumer)
    assert problems(report) == []
    assert problems(report, max_lag=100) == []
    assert problems(report, max_lag=99) == [
        "consumer group cdc-consume lags 100 messages (more than 99; worst cdc.public.klines[0] 70)"]


def test_freshness_is_the_age_of_the_newest_row_in_any_table():
    report = healthy_report()
    assert report.sink.freshness_s == 3.0
    assert problems(report, max_freshness_s=3) == []
    assert problems(report, max_freshness_s=2.5) == ["newest row in Cassandra is 3.0s old (more than 2.5s)"]


def test_missing_cassandra_tables_are_problems():
    sink = SinkHealth("market", [TableFreshness("trades_by_day", missing=True)])
    assert problems(healthy_report(sink=sink)) == ["Cassandra table market.trades_by_day is missing"]


def test_skipped_parts_are_not_judged():
    report = HealthReport(checked_at=NOW, connector=running())
    assert problems(report, max_lag=0, max_freshness_s=0) == []


# --- the screen ------------------------------------------------------------------------------------

def test_healthy_screen_shows_every_part():
    text = screen(healthy_report())
    assert text.startswith("HEALTHY")
    for expected in ("Connector cdc-postgres", "task 0", "Replication slot cdc_slot", "reserved", "1.0 kB",
                     "Consumer group cdc-consume (total lag 2)", "cdc.public.klines", "end-to-end freshness 3.0s",
                     "ticker_by_day", "40.0s"):
        assert expected in text
    assert "Problems" not in text


def test_unhealthy_screen_lists_each_problem_and_the_failed_trace():
    state = ConnectorState("cdc-postgres", "RUNNING", "w1", None, (TaskState(0, "FAILED", "w1", TRACE),))
    report = healthy_report(connector=ConnectorHealth("cdc-postgres", state))
    report.problems = judge(report, Thresholds())
    text = screen(report)
    assert text.startswith("UNHEALTHY (1 problem(s))")
    assert "FAILED" in text and "PostgresConnectorTask.start" in text
    assert f"  - {report.problems[0]}" in text


def test_screen_marks_missing_things():
    report = healthy_report(connector=ConnectorHealth("cdc-postgres", missing=True), slot=SlotHealth("cdc_slot"),
                            sink=SinkHealth("market", [TableFreshness("latest_prices", missing=True)]))
    text = screen(report)
    assert text.count("does not exist") == 2
    assert "missing" in text


def test_json_report_is_plain_data_with_derived_figures():
    report = healthy_report()
    data = orjson.loads(orjson.dumps(report.to_dict()))
    assert data["healthy"] is True
    assert data["consumer"]["total_lag"] == 2
    assert data["sink"]["freshness_s"] == 3.0
    assert data["slot"]["retained_bytes"] == 1024
    assert data["connector"]["state"]["tasks"][0]["state"] == "RUNNING"


# --- what to look at -------------------------------------------------------------------------------

def test_topics_and_slot_come_from_the_live_connector_config():
    capture = capture_settings({"slot.name": "s1", "topic.prefix": "p", "table.include.list": "public.a, public.b"})
    assert capture.slot_name == "s1"
    assert capture.topics == ("p.public.a", "p.public.b")


def test_without_a_live_config_the_default_template_says_what_is_captured():
    capture = capture_settings(None, env={"CDC_SLOT_NAME": "envslot"})
    assert capture.slot_name == "envslot"
    assert "cdc.public.ticker_24h" in capture.topics


def test_newest_row_comes_from_the_first_clustering_column_when_it_is_newest_first():
    columns = [("close_time", "regular", -1, "none"), ("event_time", "clustering", 0, "desc")]
    assert _pick_time_column(columns) == ("event_time", True)


def test_tables_without_a_time_clustering_column_use_a_known_time_column():
    columns = [("open_time", "regular", -1, "none"), ("event_time", "regular", -1, "none")]
    assert _pick_time_column(columns) == ("event_time", False)
    assert _pick_time_column([]) is None


def test_a_paused_consumer_is_a_problem_naming_its_reason_and_shows_on_the_screen():
    since = datetime(2026, 1, 2, 3, 0, 0, tzinfo=UTC).timestamp()
    consumer = ConsumerHealth("cdc-consume", [PartitionLag("cdc.public.klines", 0, 10, 12, 2)],
                              pauses=[{"reason": "cassandra_unavailable", "since": since, "pid": 4242,
                                       "message": "cassandra: NoHostAvailable: no host"}])
    report = healthy_report(consumer=consumer)
    assert problems(report) == ["consumer 4242 of group cdc-consume paused (cassandra_unavailable) since "
                                "03:00:00 UTC: cassandra: NoHostAvailable: no host"]
    assert "PAUSED (cassandra_unavailable)" in screen(report)


def test_pause_state_files_round_trip_and_stale_or_foreign_ones_are_ignored(tmp_path):
    from cdc_consumer.pause_state import Pause, PauseStateFile, read_states

    writer = PauseStateFile("cdc-consume", tmp_path)
    writer.write([Pause("registry_unavailable", 1000.0, "registry: http://user:pw@reg:8081 unreachable")])
    PauseStateFile("other-group", tmp_path).write([Pause("cassandra_unavailable", 1000.0)])
    [state] = read_states("cdc-consume", tmp_path)
    assert [(p.reason, p.since, p.message) for p in state.pauses] == [
        ("registry_unavailable", 1000.0, "registry: http://user:********@reg:8081 unreachable")]  # secrets.MASK
    assert read_states("cdc-consume", tmp_path, now=state.updated + 61) == []
    writer.remove()
    assert read_states("cdc-consume", tmp_path) == []
