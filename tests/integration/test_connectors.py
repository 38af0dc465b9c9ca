"""Registering and operating the Debezium connector against real PostgreSQL, Kafka and Kafka Connect.

Every test captures its own fresh database with its own connector name, slot and topic prefix, so tests
never see each other's changes; teardown deletes the connector, drops the slot and deletes the topics.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson
import psycopg
import pytest
from click.testing import CliRunner, Result
from psycopg.conninfo import conninfo_to_dict

from cdc_cli.cli import main
from cdc_consumer.schema import apply_sql
from connectors import slots
from connectors.connect_client import ConnectClient
from tests.support import delete_topics, unique_name, wait_until

pytestmark = pytest.mark.integration


@dataclass
class Capture:
    """One isolated capture: a database, and the connector/slot/prefix names that follow it."""
    dsn: str
    connect_url: str
    bootstrap: str
    name: str
    slot: str
    prefix: str

    def topic(self, table: str) -> str:
        return f"{self.prefix}.public.{table}"

    def register_args(self, *extra: str) -> list[str]:
        db = conninfo_to_dict(self.dsn)
        sets = {"database.dbname": db["dbname"], "database.hostname": db.get("host", "127.0.0.1"),
                "database.port": db.get("port", "5432"), "database.user": db.get("user", "cdc"),
                "slot.name": self.slot, "topic.prefix": self.prefix,
                "heartbeat.interval.ms": "1000"}  # the slot follows quickly once changes are read again
        args = ["register-connector", "--name", self.name, "--connect-url", self.connect_url]
        for key, value in sets.items():
            args += ["--set", f"{key}={value}"]
        return args + list(extra)

    def status_args(self, *extra: str, skip=("consumer", "cassandra")) -> list[str]:
        args = ["status", "--connector", self.name, "--connect-url", self.connect_url, "--pg-dsn", self.dsn,
                "--bootstrap", self.bootstrap, *extra]
        for part in skip:
            args += ["--skip", part]
        return args

    def execute(self, statement: str, params=()) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(statement, params)


def cdc(*args: str, input: str | None = None, env: dict | None = None) -> Result:
    return CliRunner().invoke(main, list(args), input=input, env=env, catch_exceptions=False)


@pytest.fixture()
def capture(pg_database: str, connect_url: str, kafka_bootstrap: str):
    with psycopg.connect(pg_database) as conn:
        apply_sql(conn)
    token = uuid.uuid4().hex[:10]
    cap = Capture(pg_database, connect_url, kafka_bootstrap, f"t-conn-{token}", f"t_slot_{token}", f"t_{token}")
    yield cap
    client = ConnectClient(connect_url)
    if client.get_config(cap.name) is not None:
        client.delete(cap.name)
    with psycopg.connect(pg_database, autocommit=True) as conn:
        slots.drop_slot(conn, cap.slot, timeout=60)
    delete_topics(kafka_bootstrap, lambda t: cap.prefix in t)


def register_running(cap: Capture, *extra: str) -> Result:
    result = cdc(*cap.register_args(*extra))
    assert result.exit_code == 0, result.output
    assert f"connector {cap.name} RUNNING" in result.output
    return result


def read_values(cap: Capture, topic: str, until, *, timeout: float = 60.0) -> list[dict]:
    """Change-event payloads of `topic` from the beginning, polled until `until(payloads)` holds."""
    from confluent_kafka import Consumer

    consumer = Consumer({"bootstrap.servers": cap.bootstrap, "group.id": unique_name("t_read"),
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    payloads: list[dict] = []

    def enough() -> bool:
        message = consumer.poll(0.5)
        if message is not None and not message.error() and message.value() is not None:
            payloads.append(orjson.loads(message.value())["payload"])
        return until(payloads)

    try:
        wait_until(enough, timeout=timeout, interval=0, what=f"change events on {topic}")
    finally:
        consumer.close()
    return payloads


def status_json(cap: Capture, *extra: str, skip=("consumer", "cassandra")) -> tuple[int, dict]:
    result = cdc(*cap.status_args("--json", *extra, skip=skip))
    return result.exit_code, orjson.loads(result.stdout)


def slot_exists(cap: Capture) -> bool:
    with psycopg.connect(cap.dsn) as conn:
        return conn.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (cap.slot,)).fetchone() is not None


# --- register --------------------------------------------------------------------------------------

def test_registered_connector_runs_and_streams_a_committed_row_to_its_topic(capture):
    result = register_running(capture)
    assert f"connector {capture.name} created" in result.output

    capture.execute("INSERT INTO trades (symbol, trade_id, price, qty, quote_qty, trade_time, is_buyer_maker, "
                    "is_best_match) VALUES ('BTCUSDT', 42, 43000.12345678, 0.5, 21500.06172839, now(), true, true)")

    events = read_values(capture, capture.topic("trades"),
                         lambda ps: any(p["after"] and p["after"]["trade_id"] == 42 for p in ps))
    [event] = [p for p in events if p["after"] and p["after"]["trade_id"] == 42]
    assert event["op"] == "c"
    assert event["after"]["symbol"] == "BTCUSDT"
    assert event["source"]["db"] == conninfo_to_dict(capture.dsn)["dbname"]


def test_register_creates_every_captured_tables_topic_before_any_change(capture):
    """A fresh capture (empty tables: the snapshot writes nothing): every table's topic exists anyway, with
    the connector's topic.creation partitions and replication, and holds no record yet."""
    from confluent_kafka import Consumer, TopicPartition
    from confluent_kafka.admin import AdminClient

    result = register_running(capture, "--set", "topic.creation.default.partitions=2")
    assert "topics created (2 partitions, replication 1)" in result.output

    topics = AdminClient({"bootstrap.servers": capture.bootstrap}).list_topics(timeout=10).topics
    reader = Consumer({"bootstrap.servers": capture.bootstrap, "group.id": unique_name("t_marks")})
    try:
        for table in ("ticker_24h", "klines", "order_book", "trades"):
            partitions = topics[capture.topic(table)].partitions
            assert sorted(partitions) == [0, 1]
            assert [len(p.replicas) for p in partitions.values()] == [1, 1]
            for number in partitions:
                assert reader.get_watermark_offsets(TopicPartition(capture.topic(table), number), timeout=10) == (0, 0)
    finally:
        reader.close()


def test_registering_the_same_config_twice_changes_nothing(capture):
    register_running(capture)
    before = ConnectClient(capture.connect_url).get_config(capture.name)

    again = cdc(*capture.register_args())

    assert again.exit_code == 0, again.output
    assert f"connector {capture.name} unchanged" in again.output
    assert ConnectClient(capture.connect_url).get_config(capture.name) == before


def test_a_changed_config_is_updated_and_the_changes_are_listed_with_secrets_masked(capture):
    register_running(capture)

    result = cdc(*capture.register_args("--set", "poll.interval.ms=40"), env={"CDC_PG_PASSWORD": "pw-1f3a9"})

    assert result.exit_code == 0, result.output
    assert f"connector {capture.name} updated (2 change(s))" in result.output
    assert "~ poll.interval.ms: 25 -> 40" in result.output
    assert "database.password: ******** (added)" in result.output
    assert "pw-1f3a9" not in result.output
    assert ConnectClient(capture.connect_url).get_config(capture.name)["poll.interval.ms"] == "40"


@pytest.mark.parametrize("override, field, says", [
    ("database.hostname=no-such-host.invalid", "database.hostname", "connection attempt failed"),
    ("decimal.handling.mode=banana", "decimal.handling.mode", "must be one of"),
])
def test_an_invalid_config_prints_field_errors_and_registers_nothing(capture, override, field, says):
    result = cdc(*capture.register_args("--set", override))

    assert result.exit_code == 1
    assert f"  {field}: " in result.stderr and says in result.stderr
    assert ConnectClient(capture.connect_url).get_config(capture.name) is None


def test_a_failing_task_prints_its_trace_and_fails_register_status_and_connector_status(capture):
    # Validation cannot know the publication is missing; the task fails when it starts streaming.
    result = cdc(*capture.register_args("--set", "publication.name=no_such_pub", "--timeout", "90"))

    assert result.exit_code == 1
    assert "task 0 FAILED:" in result.stderr and "Publication autocreation is disabled" in result.stderr
    assert cdc("connector", "status", capture.name, "--connect-url", capture.connect_url).exit_code == 1
    code, report = status_json(capture)
    assert code == 1
    assert any("FAILED" in p for p in report["problems"])


# --- operations ------------------------------------------------------------------------------------

def test_paused_connector_retains_growing_wal_and_status_fails_until_resumed(capture):
    register_running(capture)
    fill = ("INSERT INTO trades SELECT 'WAL', g, 1.5, 2, 3, now(), true, true "
            "FROM generate_series(%s::bigint, %s::bigint) g")
    assert cdc("connector", "pause", capture.name, "--connect-url", capture.connect_url).exit_code == 0

    capture.execute(fill, (1, 30_000))
    _, first = status_json(capture)
    capture.execute(fill, (30_001, 60_000))
    code, second = status_json(capture)
    grown = second["slot"]["retained_bytes"] - first["slot"]["retained_bytes"]
    assert grown > 1_000_000, (first["slot"], second["slot"])

    threshold = str(second["slot"]["retained_bytes"] // 2)
    code, paused = status_json(capture, "--max-wal-bytes", threshold)
    assert code == 1
    assert any(f"retains {paused['slot']['retained_bytes']} bytes of WAL" in p for p in paused["problems"])

    assert cdc("connector", "resume", capture.name, "--connect-url", capture.connect_url).exit_code == 0
    wait_until(lambda: status_json(capture, "--max-wal-bytes", threshold)[0] == 0, timeout=120, interval=1,
               what="the slot to drain after resume")


def slot_backend(cap: Capture) -> int | None:
    """PostgreSQL's pid of the walsender streaming the connector's slot (None: no task streams it).

    An observation independent of Connect: a task that really restarted closed its replication connection
    and opened a new one, so the slot's active_pid changes."""
    with psycopg.connect(cap.dsn) as conn:
        row = conn.execute("SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s", (cap.slot,)).fetchone()
    return row[0] if row else None


def all_running(cap: Capture) -> bool:
    state = ConnectClient(cap.connect_url).status(cap.name)
    return state.state == "RUNNING" and bool(state.tasks) and all(t.state == "RUNNING" for t in state.tasks)


def streams_a_new_trade(cap: Capture, trade_id: int) -> None:
    cap.execute("INSERT INTO trades (symbol, trade_id, price, qty, trade_time) VALUES ('BTCUSDT', %s, 1.5, 2.5, now())",
                (trade_id,))
    read_values(cap, cap.topic("trades"), lambda ps: any(p["after"] and p["after"]["trade_id"] == trade_id for p in ps))


def test_restart_all_reopens_a_running_tasks_replication_connection_and_it_streams_again(capture):
    register_running(capture)
    status = cdc("connector", "status", capture.name, "--connect-url", capture.connect_url)
    assert status.exit_code == 0 and "RUNNING" in status.output
    before = wait_until(lambda: slot_backend(capture), timeout=60, what="the task to stream its slot")

    restart = cdc("connector", "restart", capture.name, "--all", "--connect-url", capture.connect_url)

    assert restart.exit_code == 0 and "restart requested (connector and all tasks)" in restart.output

    def new_backend() -> int | None:
        pid = slot_backend(capture)
        return pid if pid not in (None, before) else None

    wait_until(new_backend, timeout=90, interval=0.2, what=f"a new walsender (not pid {before}) on the slot")
    wait_until(lambda: all_running(capture), timeout=60, what="the connector and its tasks to be RUNNING")
    streams_a_new_trade(capture, 7)


def test_restart_brings_a_failed_task_back_to_running_once_its_cause_is_fixed(capture):
    publication = f"pub_{capture.slot}"  # not created yet: the task fails when it starts streaming
    register = cdc(*capture.register_args("--set", f"publication.name={publication}", "--timeout", "90"))
    assert register.exit_code == 1 and "task 0 FAILED:" in register.stderr
    assert cdc("connector", "status", capture.name, "--connect-url", capture.connect_url).exit_code == 1
    assert slot_backend(capture) is None  # nothing streams while the task is FAILED
    capture.execute(f"CREATE PUBLICATION {publication} FOR TABLE ticker_24h, klines, order_book, trades, "
                    "cdc_heartbeat, cdc_signal")  # the cause fixed: what sql/ creates as cdc_pub

    restart = cdc("connector", "restart", capture.name, "--connect-url", capture.connect_url)

    assert restart.exit_code == 0 and "restart requested (connector and failed tasks)" in restart.output
    wait_until(lambda: all_running(capture), timeout=90, what="the failed task to be RUNNING after the restart")
    wait_until(lambda: slot_backend(capture), timeout=60, what="the restarted task to stream its slot")
    status = cdc("connector", "status", capture.name, "--connect-url", capture.connect_url)
    assert status.exit_code == 0, status.output
    streams_a_new_trade(capture, 8)


def test_delete_asks_first_and_with_drop_slot_leaves_no_slot(capture):
    register_running(capture)
    wait_until(lambda: slot_exists(capture), timeout=30, what="the connector's slot")
    delete = ["connector", "delete", capture.name, "--connect-url", capture.connect_url, "--pg-dsn", capture.dsn,
              "--drop-slot"]

    declined = cdc(*delete, input="n\n")
    assert declined.exit_code == 1 and "Aborted" in declined.output
    assert ConnectClient(capture.connect_url).get_config(capture.name) is not None

    result = cdc(*delete, "--yes")
    assert result.exit_code == 0, result.output
    assert f"replication slot {capture.slot} dropped" in result.output
    assert ConnectClient(capture.connect_url).get_config(capture.name) is None
    assert not slot_exists(capture)


def test_a_connector_whose_task_failed_is_deleted_in_one_call(capture):
    publication = f"pub_{capture.slot}"  # does not exist: the task fails when it starts streaming
    register = cdc(*capture.register_args("--set", f"publication.name={publication}", "--timeout", "90"))
    assert register.exit_code == 1 and "task 0 FAILED:" in register.stderr

    result = cdc("connector", "delete", capture.name, "--connect-url", capture.connect_url, "--pg-dsn", capture.dsn,
                 "--drop-slot", "--yes")

    assert result.exit_code == 0, result.output
    assert f"connector {capture.name} deleted (offsets reset)" in result.output
    assert ConnectClient(capture.connect_url).get_config(capture.name) is None
    assert not slot_exists(capture)


def test_a_connector_registered_again_after_delete_with_drop_slot_starts_with_a_fresh_snapshot(capture):
    register_running(capture)
    capture.execute("INSERT INTO order_book VALUES ('BTCUSDT', 'bid', 0, 42000, 1.5, 7, now())")
    assert cdc("connector", "delete", capture.name, "--connect-url", capture.connect_url, "--pg-dsn", capture.dsn,
               "--drop-slot", "--yes").exit_code == 0

    register_running(capture)  # stale offsets would point into the dropped slot and fail the task

    events = read_values(capture, capture.topic("order_book"), lambda ps: any(p["op"] == "r" for p in ps))
    assert [p["after"]["symbol"] for p in events if p["op"] == "r"] == ["BTCUSDT"]


# --- snapshot --------------------------------------------------------------------------------------

def test_snapshot_re_emits_existing_rows_as_read_events(capture):
    register_running(capture)
    capture.execute("INSERT INTO klines (symbol, interval, open_time, close, volume) VALUES "
                    "('BTCUSDT', '1m', '2024-01-01T00:00Z', 42000.1, 1), ('BTCUSDT', '1m', '2024-01-01T00:01Z', 42001.2, 2),"
                    "('ETHUSDT', '1h', '2024-01-01T00:00Z', 2300.5, 3)")
    topic = capture.topic("klines")
    read_values(capture, topic, lambda ps: sum(p["op"] == "c" for p in ps) == 3)

    result = cdc("snapshot", "--table", "public.klines", "--pg-dsn", capture.dsn)
    assert result.exit_code == 0, result.output

    def snapshot_reads(payloads):
        return [p for p in payloads if p["op"] == "r" and p["source"]["snapshot"] == "incremental"]

    reads = snapshot_reads(read_values(capture, topic, lambda ps: len(snapshot_reads(ps)) >= 3))
    assert sorted((p["after"]["symbol"], p["after"]["interval"]) for p in reads) == [
        ("BTCUSDT", "1m"), ("BTCUSDT", "1m"), ("ETHUSDT", "1h")]



# --- cdc status: consumer lag and Cassandra freshness ----------------------------------------------

def commit_end_offsets(bootstrap: str, group: str, topic: str) -> None:
    """Commit the end of every partition of `topic` for `group`, as a sink that caught up would."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = [TopicPartition(topic, p, consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1])
                for p in partitions]
        consumer.commit(offsets=ends, asynchronous=False)
    finally:
        consumer.close()


def test_status_reports_consumer_lag_per_partition_until_the_group_commits(capture):
    register_running(capture)
    capture.execute("INSERT INTO trades SELECT 'LAG', g, 1, 1, 1, now(), true, true FROM generate_series(1, 5) g")
    topic = capture.topic("trades")
    read_values(capture, topic, lambda ps: len(ps) >= 5)
    group = unique_name("t_group")
    options = ("--group", group, "--max-lag", "0")

    code, lagging = status_json(capture, *options, skip=("cassandra",))
    assert code == 1
    assert sum(p["lag"] for p in lagging["consumer"]["partitions"] if p["topic"] == topic) == 5
    assert any(f"consumer group {group} lags 5 messages" in p for p in lagging["problems"])

    commit_end_offsets(capture.bootstrap, group, topic)
    code, caught_up = status_json(capture, *options, skip=("cassandra",))
    assert code == 0, caught_up["problems"]
    lags = [p["lag"] for p in caught_up["consumer"]["partitions"] if p["topic"] == topic]
    assert lags and set(lags) == {0}


def test_status_reports_the_newest_row_of_each_cassandra_table_and_missing_tables(cassandra_session):
    from cdc_consumer.schema import apply_cql

    keyspace = cassandra_session.keyspace
    apply_cql(cassandra_session, keyspace)
    newest = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=30)
    for event_time in (newest - timedelta(hours=1), newest):
        cassandra_session.execute("INSERT INTO ticker_by_day (symbol, day, event_time, event_time_us) "
                                  "VALUES (%s, %s, %s, %s)", ("BTCUSDT", event_time.date(), event_time, 0))
    cassandra_session.execute("DROP TABLE trades_by_day")
    args = ["status", "--json", "--cassandra-keyspace", keyspace, "--skip", "connector", "--skip", "slot",
            "--skip", "consumer"]

    result = cdc(*args, "--max-freshness-s", "3600")

    report = orjson.loads(result.stdout)
    tables = {t["table"]: t for t in report["sink"]["tables"]}
    assert tables["ticker_by_day"]["time_column"] == "event_time"
    assert datetime.fromisoformat(tables["ticker_by_day"]["newest"]) == newest
    assert tables["trades_by_day"]["missing"] is True
    assert 30 <= report["sink"]["freshness_s"] < 3600
    assert report["problems"] == [f"Cassandra table {keyspace}.trades_by_day is missing"]
    assert result.exit_code == 1

    stale = orjson.loads(cdc(*args, "--max-freshness-s", "10").stdout)
    assert any("newest row in Cassandra is" in p for p in stale["problems"])
