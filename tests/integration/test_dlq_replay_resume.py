"""`cdc dlq replay --reason` and the resume of an interrupted replay, on the real Kafka, Cassandra and
PostgreSQL (issue 14); `cdc dlq list` without `--topic`.

The DLQs are filled by a real consumer: a mapping restricted to topics the stream does not use parks the
klines as UnmappableRecord (reason tag `unmappable`), and values that are not JSON are parked as
InvalidJson (tag `undecodable`). The replays run the real `cdc dlq replay`. The expected Cassandra rows
come from PostgreSQL through `tests/oracle.py`, which shares no code with the write path.

The interrupted replay is stopped at a point the test chooses, without a clock: one record's Avro value
schema is served by the registry under an id it cannot answer for now (HTTP 500: transient), so the replay
applies and commits the records before it, holds that one (paused, never parked) and is killed there.
Kafka 4 caps min.insync.replicas at the replication factor, so a DLQ topic that refuses acks=all writes
cannot hold a single-broker replay instead.
"""

from __future__ import annotations

import json
import os
import re
import signal
import struct
import subprocess
import sys
import threading
from datetime import UTC, datetime

import pytest
import yaml
from click.testing import CliRunner

from bench.bench_decoder import AVRO_SCHEMA_IDS, avro_records
from bench.envelopes import Stream, kline_stream
from cdc_cli.cli import main
from cdc_consumer import schema
from cdc_consumer.avro import AvroDecoder
from tests.integration.consume_support import (
    build_consumer,
    committed_offsets,
    create_topic,
    epoch_us,
    produce,
    read_all,
    running,
    wait_caught_up,
    write_mapping,
)
from tests.integration.test_dlq_replay import insert_source_rows
from tests.oracle import assert_replicated
from tests.support import REPO, delete_topics, unique_name, wait_until
from tests.unit.test_avro_registry import Registry

pytestmark = pytest.mark.integration
START_TS_US = 2_000_000_000_000_000  # the source commit time of the first kline (2033-05-18)
KLINES_TOPIC = "cdc.public.klines"
KLINE_VALUE_ID, HELD_ID = AVRO_SCHEMA_IDS["klines"][1], 1004  # HELD_ID: the klines value schema, another id


def cdc(*args: str):
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def headers_of(message) -> dict[str, str]:
    return {k: v.decode() for k, v in message.headers() or ()}


def garbage(index: int) -> tuple[bytes, bytes]:
    return f'{{"id": {index}}}'.encode(), f"not json {index}".encode()


def klines(count: int, start: datetime) -> Stream:
    return kline_stream(count, symbols=4, start=start, start_ts_us=START_TS_US)


def mappings(tmp_path) -> tuple[str, str]:
    """(fixed, broken): the packaged mapping, and one whose klines only match topics nobody uses."""
    fixed = write_mapping(tmp_path)
    document = yaml.safe_load(fixed.read_text())
    document["tables"]["public.klines"]["topics"] = ["nowhere.*"]
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump(document, sort_keys=False))
    return str(fixed), str(broken)


def park(kafka_bootstrap: str, session, topic: str, records: list, broken: str, decode=None) -> str:
    """Run a consumer with the broken mapping over `records` (one partition, in order); the DLQ topic."""
    create_topic(kafka_bootstrap, topic, 1)
    produce(kafka_bootstrap, topic, records, partition=0)
    group = unique_name("g")
    with running(build_consumer(kafka_bootstrap, session, topic, group, mapping_file=broken, decode=decode)):
        wait_caught_up(kafka_bootstrap, group, topic)
    return f"{topic}.dlq"


def klines_stored(session) -> int:
    return session.execute("SELECT count(*) FROM klines_by_bucket").one()[0]


def by_reason(dlq: str) -> dict[str, tuple[int, int]]:
    """`cdc dlq list --topic DLQ --json`: reason -> (records, not replayed)."""
    code, output = cdc("dlq", "list", "--topic", dlq, "--json", "--samples", "0")
    assert code == 0, output
    [listing] = json.loads(output)
    return {row["reason"]: (row["records"], row["not_replayed"]) for row in listing["by_reason"]}


def test_a_replay_filtered_by_reason_applies_that_reason_only_and_the_other_stays_parked(
        pg_database, kafka_bootstrap, kafka_topic, cassandra_session, tmp_path):
    keyspace = cassandra_session.keyspace
    schema.apply_cql(cassandra_session, keyspace)
    stream = klines(120, datetime(2041, 1, 1, tzinfo=UTC))
    insert_source_rows(pg_database, list(stream.rows.values()))
    bad = [garbage(i) for i in range(5)]
    records = [record for chunk in range(5) for record in (*stream.records[24 * chunk:24 * (chunk + 1)], bad[chunk])]
    fixed, broken = mappings(tmp_path)
    dlq = park(kafka_bootstrap, cassandra_session, kafka_topic, records, broken)
    parked = read_all(kafka_bootstrap, dlq)
    assert [headers_of(m)["cdc.error.type"] for m in parked] == [
        "InvalidJson" if (k, v) in bad else "UnmappableRecord" for k, v in records]
    assert by_reason(dlq) == {"UnmappableRecord": (120, 120), "InvalidJson": (5, 5)}

    replay = ("dlq", "replay", "--topic", dlq, "--cassandra-keyspace", keyspace, "--mapping", fixed)
    code, output = cdc(*replay, "--reason", "UnmappableRecord", "--dry-run")
    assert code == 0 and f"{120:>8}  would apply" in output and "would park again" not in output, output
    code, output = cdc(*replay, "--reason", "UnmappableRecord")
    assert code == 0, output
    assert "applied 120, parked again 0, skipped 5" in output
    assert klines_stored(cassandra_session) == 120
    assert_replicated(pg_database, cassandra_session, keyspace, ("klines_by_bucket",), minimum_rows=120)
    # The other reason stays parked, untouched: nothing re-parked, nothing lost, and `dlq list` says so.
    assert [(m.offset(), m.key(), m.value()) for m in read_all(kafka_bootstrap, dlq)] == [
        (m.offset(), m.key(), m.value()) for m in parked]
    assert by_reason(dlq) == {"UnmappableRecord": (120, 0), "InvalidJson": (5, 5)}
    code, output = cdc(*replay, "--reason", "UnmappableRecord")
    assert code == 0 and "nothing to replay" in output, output

    # The other reason by its tag: still undecodable, so parked again (attempt 2), never lost.
    code, output = cdc(*replay, "--reason", "undecodable")
    assert code == 0, output
    assert "applied 0, parked again 5, skipped 120" in output
    now = read_all(kafka_bootstrap, dlq)
    assert len(now) == 125 + 5
    again = [(m.key(), m.value(), headers_of(m)) for m in now[125:]]
    assert [(key, value) for key, value, _ in again] == bad  # byte for byte, in order
    first = {h["cdc.original.offset"] for h in map(headers_of, parked) if h["cdc.error.type"] == "InvalidJson"}
    assert {h["cdc.original.offset"] for _, _, h in again} == first
    assert all((h["cdc.dlq.attempt"], h["cdc.error.type"], h["cdc.original.topic"]) == ("2", "InvalidJson", kafka_topic)
               for _, _, h in again)
    assert by_reason(dlq) == {"UnmappableRecord": (120, 0), "InvalidJson": (10, 5)}
    assert klines_stored(cassandra_session) == 120


class HoldingRegistry(Registry):
    """The captured AvroConverter schemas over HTTP, some also under another id (`aliases`: new id -> id);
    answers 500 for the ids in `unavailable`."""

    def __init__(self, aliases: dict[int, int]) -> None:
        super().__init__()
        self.schemas.update({new: self.schemas[old] for new, old in aliases.items()})
        self.unavailable: set[int] = set()

    def _handler(self):
        registry = self

        class Handler(super()._handler()):
            def do_GET(self):
                match = re.fullmatch(r"/schemas/ids/(\d+)", self.path)
                if match and int(match.group(1)) in registry.unavailable:
                    registry.requests.append(self.path)
                    return self._answer(500, {"error_code": 50001, "message": "store unavailable"})
                return super().do_GET()

        return Handler


@pytest.fixture()
def holding_registry():
    registry = HoldingRegistry({HELD_ID: KLINE_VALUE_ID})
    threading.Thread(target=registry.server.serve_forever, daemon=True).start()
    yield registry
    registry.server.shutdown()
    registry.server.server_close()


def reframed(value: bytes, schema_id: int) -> bytes:
    """The same Avro value under another schema id (Confluent wire format: magic byte, 4-byte id, body)."""
    return value[:1] + struct.pack(">I", schema_id) + value[5:]


def cdc_dlq_replay(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cdc_cli.cli", "dlq", "replay", *args], cwd=REPO,
                            env=os.environ.copy(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_a_replay_killed_midway_resumes_from_its_committed_offset_and_applies_each_record_once(
        pg_database, kafka_bootstrap, kafka_topic, cassandra_session, holding_registry, tmp_path):
    """The replay is stopped where the test chooses, without a clock: record 60's value schema is one the
    registry cannot serve for now (HTTP 500, transient), so the replay applies and commits the 60 records
    before it, holds that record (paused, never parked) and is killed there (SIGKILL: no drain, no final
    commit)."""
    keyspace = cassandra_session.keyspace
    schema.apply_cql(cassandra_session, keyspace)
    stream = klines(120, datetime(2042, 1, 1, tzinfo=UTC))
    insert_source_rows(pg_database, list(stream.rows.values()))
    records = [(key, value) for _, key, value in avro_records([(KLINES_TOPIC, *r) for r in stream.records])]
    records[60] = (records[60][0], reframed(records[60][1], HELD_ID))
    fixed, broken = mappings(tmp_path)
    dlq = park(kafka_bootstrap, cassandra_session, kafka_topic, records, broken,
               decode=AvroDecoder(holding_registry.url).decode_record)
    assert len(read_all(kafka_bootstrap, dlq)) == 120
    group = f"cdc-dlq-replay.{dlq}"
    replay = ("--topic", dlq, "--cassandra-keyspace", keyspace, "--mapping", fixed, "--format", "avro",
              "--registry", holding_registry.url)

    holding_registry.unavailable.add(HELD_ID)
    process = cdc_dlq_replay(*replay)
    try:
        def held_at_record_60() -> bool:
            assert process.poll() is None, f"the replay ended with exit code {process.returncode}"
            return committed_offsets(kafka_bootstrap, group, dlq) == {0: 60} and klines_stored(cassandra_session) == 60

        wait_until(lambda: f"/schemas/ids/{HELD_ID}" in holding_registry.requests, timeout=120,
                   what="the replay to ask for the held schema")
        wait_until(held_at_record_60, timeout=60, what="the replay to apply and commit the 60 records before it")
        process.send_signal(signal.SIGKILL)
        output, _ = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == -signal.SIGKILL, output
    assert committed_offsets(kafka_bootstrap, group, dlq) == {0: 60}  # the progress it committed survives
    assert klines_stored(cassandra_session) == 60
    assert len(read_all(kafka_bootstrap, dlq)) == 120  # nothing parked again, nothing lost

    holding_registry.unavailable.clear()
    code, output = cdc("dlq", "replay", *replay)
    assert code == 0, output
    # It resumed at offset 60: the 60 records from there, never the 60 applied before the kill.
    assert "replayed 60 record(s): applied 60, parked again 0, skipped 0" in output
    assert committed_offsets(kafka_bootstrap, group, dlq) == {0: 120}
    assert len(read_all(kafka_bootstrap, dlq)) == 120

    # Each kline once in effect: exactly the source rows, each with its own source commit time as write time.
    assert_replicated(pg_database, cassandra_session, keyspace, ("klines_by_bucket",), minimum_rows=120)
    written = {(r.symbol, r.open_time_us): r.writetime for r in cassandra_session.execute(
        "SELECT symbol, open_time_us, writetime(close_exact) AS writetime FROM klines_by_bucket")}
    assert written == {(row["symbol"], epoch_us(row["open_time"])): START_TS_US + index
                       for index, row in enumerate(stream.rows.values())}


def test_dlq_list_without_a_topic_lists_every_dlq_topic(kafka_bootstrap, cassandra_session, tmp_path):
    schema.apply_cql(cassandra_session, cassandra_session.keyspace)
    first, second = unique_name("t"), unique_name("t")
    _, broken = mappings(tmp_path)
    stream = klines(6, datetime(2043, 1, 1, tzinfo=UTC))
    try:
        park(kafka_bootstrap, cassandra_session, first, stream.records[:4], broken)
        park(kafka_bootstrap, cassandra_session, second, [*stream.records[4:], garbage(1)], broken)
        code, output = cdc("dlq", "list", "--json", "--samples", "0")
        assert code == 0, output
        listed = {entry["topic"]: entry for entry in json.loads(output)}
        assert all(topic.endswith(".dlq") for topic in listed)
        assert {topic: (entry["records"], [(r["reason"], r["source_topic"], r["records"]) for r in entry["by_reason"]])
                for topic, entry in listed.items() if topic in (f"{first}.dlq", f"{second}.dlq")} == {
            f"{first}.dlq": (4, [("UnmappableRecord", first, 4)]),
            f"{second}.dlq": (3, [("UnmappableRecord", second, 2), ("InvalidJson", second, 1)])}
        code, output = cdc("dlq", "list")
        assert code == 0 and f"{first}.dlq: 4 record(s)" in output and f"{second}.dlq: 3 record(s)" in output, output
    finally:
        delete_topics(kafka_bootstrap, [first, f"{first}.dlq", second, f"{second}.dlq"])
