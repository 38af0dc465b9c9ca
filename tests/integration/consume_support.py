"""Helpers of the `cdc consume` integration tests: topics, producing, offsets, running the consumer, oracles."""

from __future__ import annotations

import base64
import functools
import json
import subprocess
import sys
import threading
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import yaml
from cassandra.util import Date as CqlDate
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from cdc_consumer import kafka_clients
from cdc_consumer.config import KafkaSettings
from cdc_consumer.consumer import ChangeConsumer, ConsumerSettings
from cdc_consumer.decoder import Decoder
from cdc_consumer.dlq import DeadLetterQueue
from cdc_consumer.mapping import (
    compile_mapping,
    default_mapping_path,
    describe_tables,
    load_mapping,
)
from cdc_consumer.sink import CassandraSink
from tests.support import REPO, unique_name, wait_until

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# ------------------------------------------------------------------------------------------ Kafka


def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})  # must outlive the future
    futures = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    futures[topic].result(timeout=30)


def produce(bootstrap: str, topic: str, records: Iterable[tuple], partition: int | None = None) -> None:
    """Produce (key, value[, headers]) tuples in order and wait for every acknowledgement."""
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5, "enable.idempotence": True})
    failures = []
    for record in records:
        key, value, headers = (*record, None)[:3]
        kwargs = {"partition": partition} if partition is not None else {}
        while True:
            try:
                producer.produce(topic, value=value, key=key, headers=list(headers or ()),
                                 on_delivery=lambda err, _msg: err and failures.append(err), **kwargs)
                break
            except BufferError:
                producer.poll(0.1)
    assert producer.flush(60) == 0, "producer did not deliver everything"
    assert not failures, failures


def high_watermarks(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": unique_name("wm")})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions}
    finally:
        consumer.close()


def committed_offsets(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        committed = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
        return {tp.partition: tp.offset for tp in committed}
    finally:
        consumer.close()


def caught_up(bootstrap: str, group: str, topic: str) -> bool:
    return committed_offsets(bootstrap, group, topic) == high_watermarks(bootstrap, topic)


def wait_caught_up(bootstrap: str, group: str, topic: str, timeout: float = 90) -> None:
    wait_until(lambda: caught_up(bootstrap, group, topic), timeout=timeout, interval=0.25,
               what=f"group {group} to commit every offset of {topic}")


def read_all(bootstrap: str, topic: str) -> list:
    """Every message of a topic (all partitions), from the beginning to the current end."""
    ends = high_watermarks(bootstrap, topic)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": unique_name("read"),
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
    messages, remaining = [], sum(ends.values())
    try:
        def drained() -> bool:
            nonlocal remaining
            for message in consumer.consume(500, 0.5):
                if message.error() is None:
                    messages.append(message)
                    remaining -= 1
            return remaining <= 0
        wait_until(drained, timeout=60, interval=0, what=f"all {sum(ends.values())} messages of {topic}")
    finally:
        consumer.close()
    return messages


# -------------------------------------------------------------------------------------- consumer

# The fixtures' toast_demo table gets a test-only Cassandra table and mapping (TOAST behaviour);
# type_zoo and trade_nopk have no Cassandra table: their events are counted and skipped.
TOAST_TABLE = "CREATE TABLE IF NOT EXISTS toast_demo (id int PRIMARY KEY, payload text, note text)"
TOAST_MAPPING = {"public.toast_demo": {"targets": [
    {"table": "toast_demo", "columns": {"id": "id", "payload": "payload", "note": "note"}}]}}
FIXTURE_ONLY_TABLES = ("public.type_zoo", "public.trade_nopk")


def write_mapping(tmp_path: Path, *, extra_tables: dict | None = None, skip: Iterable[str] = ()) -> Path:
    """The default mapping plus test-only source tables, as a file for --mapping."""
    document = yaml.safe_load(default_mapping_path().read_text())
    document["tables"].update(extra_tables or {})
    document["skip_tables"] = [*document.get("skip_tables", []), *skip]
    path = tmp_path / "mapping.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def build_consumer(bootstrap: str, session, topic: str, group: str, mapping_file: Path | None = None,
                   decode=None, **settings) -> ChangeConsumer:
    keyspace = session.keyspace
    mapping = compile_mapping(load_mapping(mapping_file), describe_tables(session, keyspace), session.prepare,
                              keyspace)
    sink_options = {k: settings.pop(k) for k in ("retry_max", "max_in_flight", "max_batch_rows") if k in settings}
    return ChangeConsumer(ConsumerSettings(bootstrap, group, (topic,), **settings), decode or Decoder().decode_record,
                          mapping,
                          CassandraSink(session, **sink_options), DeadLetterQueue(bootstrap),
                          kafka_consumer=functools.partial(kafka_clients.consumer, KafkaSettings(bootstrap)))


@contextmanager
def running(consumer: ChangeConsumer):
    """Run a consumer on a thread; on exit stop it (drain, commit) and re-raise anything it raised."""
    stop = threading.Event()
    outcome: dict = {}

    def target() -> None:
        try:
            outcome["drained"] = consumer.run(stop)
        except BaseException as exc:  # noqa: BLE001 - reported to the test thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    try:
        yield outcome
    finally:
        stop.set()
        thread.join(120)
    assert not thread.is_alive(), "consumer did not stop"
    if "error" in outcome:
        raise outcome["error"]
    assert outcome.get("drained") is True, "consumer stopped without draining"


def cdc_consume(*args: str, env: dict | None = None) -> subprocess.Popen:
    """`cdc consume ARGS` as a child process (same interpreter as the tests)."""
    return subprocess.Popen([sys.executable, "-m", "cdc_cli.cli", "consume", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


# ---------------------------------------------------------------------------------------- oracles


# The expected source rows are read from the Debezium JSON envelopes by the plain code below, which shares
# nothing with cdc_consumer's decoder (the first stage of the write path): `json`, `base64` and the two
# Connect types the mapped tables use, written out.

CONNECT_DECIMAL = "org.apache.kafka.connect.data.Decimal"
ZONED_TIMESTAMP = "io.debezium.time.ZonedTimestamp"
UNAVAILABLE_TEXT = "__debezium_unavailable_value"  # Debezium's unavailable.value.placeholder (unchanged TOAST)


def connect_decimal(text: str, scale: int) -> Decimal:
    """A Connect Decimal: base64 of the big-endian two's-complement unscaled integer, value = unscaled * 10**-scale
    (built from its digits and scale, so nothing is rounded)."""
    unscaled = int.from_bytes(base64.b64decode(text, validate=True), "big", signed=True)
    return Decimal(f"{unscaled}e-{scale}")


def plain_value(field: dict, value):
    if value is None:
        return None
    if field.get("name") == CONNECT_DECIMAL:
        return connect_decimal(value, int(field["parameters"]["scale"]))
    if field.get("name") == ZONED_TIMESTAMP:
        return datetime.fromisoformat(value)  # ISO 8601 in UTC ('Z'): an aware datetime, to the microsecond
    return value  # text, integers and booleans as JSON has them (other logical types: fixture-only tables)


def plain_row(fields: list[dict], values: dict | None) -> dict | None:
    if values is None:
        return None
    by_name = {f["field"]: f for f in fields}
    return {name: plain_value(by_name[name], value) for name, value in values.items()}


@dataclass(frozen=True)
class PlainEvent:
    table: str  # schema.table
    op: str  # r, c, u, d or t
    key: tuple | None  # the key record's values, in its order (None: keyless table or TRUNCATE)
    after: dict | None
    order: tuple[int, int]  # (source.ts_us, source.lsn): commit order


def plain_event(key: bytes | None, value: bytes | None) -> PlainEvent | None:
    """One Debezium JSON record (schemas enabled) read without the product's decoder; None for a tombstone."""
    if value is None:
        return None
    envelope = json.loads(value)
    payload = envelope["payload"]
    after_fields = next(f["fields"] for f in envelope["schema"]["fields"] if f["field"] == "after")
    row_key = None
    if key is not None:
        key_document = json.loads(key)
        row_key = tuple(plain_row(key_document["schema"]["fields"], key_document["payload"]).values())
    source = payload["source"]
    return PlainEvent(f"{source['schema']}.{source['table']}", payload["op"], row_key,
                      plain_row(after_fields, payload["after"]), (source["ts_us"], source["lsn"]))


def source_state(records) -> dict[str, dict[tuple, dict]]:
    """Replay the change events of (topic, key, value, ...) records into the final source rows per table
    (TRUNCATE ignored, as the consumer does by default). An unchanged TOAST column keeps its previous value."""
    state: dict[str, dict[tuple, dict]] = {}
    for _topic, key, value, *_ in records:
        event = plain_event(key, value)
        if event is None or event.op == "t" or event.key is None:
            continue
        rows = state.setdefault(event.table, {})
        if event.op == "d":
            rows.pop(event.key, None)
        else:
            old = rows.get(event.key, {})
            rows[event.key] = {**old, **{c: v for c, v in event.after.items() if v != UNAVAILABLE_TEXT}}
    return state


def latest_by_symbol(records) -> dict[str, dict]:
    """latest_prices oracle: per symbol the after-image of the newest committed ticker upsert."""
    newest: dict[str, tuple] = {}
    for _topic, key, value, *_ in records:
        event = plain_event(key, value)
        if event is not None and event.table == "public.ticker_24h" and event.op in ("r", "c", "u"):
            symbol = event.after["symbol"]
            if symbol not in newest or event.order >= newest[symbol][0]:
                newest[symbol] = (event.order, event.after)
    return {symbol: after for symbol, (_, after) in newest.items()}


def epoch_us(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(microseconds=1)


def cassandra_value(source_value, column: str):
    """What a Cassandra column holds for a source value under the project's conventions."""
    if isinstance(source_value, Decimal):
        return source_value if column.endswith("_exact") else float(source_value)
    if isinstance(source_value, datetime):
        if column.endswith("_us"):
            return epoch_us(source_value)
        utc = source_value.astimezone(UTC).replace(tzinfo=None)
        return utc.replace(microsecond=utc.microsecond // 1000 * 1000)  # Cassandra keeps milliseconds
    return source_value


def assert_row_matches(cql_row, source_row: dict, derived: dict | None = None) -> None:
    """Every column of a Cassandra row equals the source row's value (decimals digit for digit);
    `derived` gives the expected value of columns computed from others (day, bucket)."""
    derived = derived or {}
    for column, stored in cql_row._asdict().items():
        if isinstance(stored, CqlDate):
            stored = stored.date()
        if column in derived:
            expected = derived[column]
        else:
            expected = cassandra_value(source_row.get(column.removesuffix("_exact").removesuffix("_us")), column)
        if isinstance(expected, Decimal):
            assert isinstance(stored, Decimal) and str(stored) == str(expected), (column, stored, expected)
        else:
            assert stored == expected, (column, stored, expected)
