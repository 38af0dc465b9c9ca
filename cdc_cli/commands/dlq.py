"""`cdc dlq list` and `cdc dlq replay`: look into dead-letter topics, and re-apply what they hold.

`list` reads DLQ topics from the beginning (without joining any group) and counts the parked records
by reason and source topic, marking how many a replay has not passed yet (an unfiltered replay, or a
`--reason` replay that matches them), with a few decoded samples.

`replay` runs the same consumer loop as `cdc consume` (decoder, mapping, Cassandra sink with its
USING TIMESTAMP writes, manual commits) over one DLQ topic, in its own consumer group
(`cdc-dlq-replay.<topic>[.<reason>]`), up to the end offsets seen when it starts. Each record is decoded
as coming from its original topic (`cdc.original.topic`). A record that still fails is parked again in
the same DLQ topic with `cdc.dlq.attempt` + 1 before the replay commits past it, so nothing is lost; an
interrupted replay resumes from its committed position; a second replay of the same DLQ finds nothing
new, or only the records it re-parked, and writes the same values with the same timestamps again.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import click
import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from cdc_cli.commands.consume import make_decoder, mapped_session
from cdc_cli.commands.options import cassandra_options, kafka_option, registry_option
from cdc_consumer import kafka_clients
from cdc_consumer.config import KafkaSettings
from cdc_consumer.consumer import IGNORE, ChangeConsumer, ConsumerSettings
from cdc_consumer.dlq import (
    ReparkingQueue,
    header_map,
    matches_reason,
    parked_reason,
    replay_group,
)
from cdc_consumer.errors import FatalError
from cdc_consumer.events import RecordContext
from cdc_consumer.render import event_to_json
from cdc_consumer.sink import CassandraSink

log = logging.getLogger("cdc_consumer.dlq")


@click.group()
def dlq() -> None:
    """Dead-letter topics: list what is parked, replay it once the cause is fixed."""


# ------------------------------------------------------------------------------------------ reading


@dataclass
class Parked:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list
    info: dict[str, str]


def _client(kafka: KafkaSettings, group: str | None = None) -> Consumer:
    return kafka_clients.consumer(kafka, {"group.id": group or "cdc-dlq-reader", "enable.auto.commit": False,
                                          "enable.partition.eof": False})


def _ends(client: Consumer, topic: str) -> dict[int, tuple[int, int]]:
    metadata = client.list_topics(topic, timeout=10).topics.get(topic)
    if metadata is None or metadata.error is not None:
        raise click.ClickException(f"DLQ topic {topic} does not exist")
    return {p: client.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in metadata.partitions}


def _replayed_up_to(kafka: KafkaSettings, topic: str, group: str, partitions) -> dict[int, int]:
    client = _client(kafka, group)
    try:
        committed = client.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
        return {tp.partition: max(tp.offset, 0) for tp in committed}
    finally:
        client.close()


def read_parked(kafka: KafkaSettings, topic: str, timeout: float = 60.0) -> list[Parked]:
    """Every record of a DLQ topic, start to the current end (bounded by that end, not by waiting)."""
    client = _client(kafka)
    try:
        ends = {p: high for p, (low, high) in _ends(client, topic).items() if high > low}
        if not ends:
            return []
        client.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        parked: list[Parked] = []
        remaining = dict(ends)
        deadline = time.monotonic() + timeout
        while remaining and time.monotonic() < deadline:
            for message in client.consume(500, 0.5):
                if message.error() is not None:
                    continue
                _, p, o, headers = kafka_clients.consumed(message)
                parked.append(Parked(p, o, message.key(), message.value(), headers or [], header_map(headers)))
                if o + 1 >= remaining.get(p, 0):
                    remaining.pop(p, None)
        if remaining:
            raise click.ClickException(f"could not read all of {topic} within {timeout:.0f}s")
        return parked
    finally:
        client.close()


def _dlq_topics(kafka: KafkaSettings) -> list[str]:
    client = _client(kafka)
    try:
        return sorted(t for t in client.list_topics(timeout=10).topics if t.endswith(".dlq"))
    finally:
        client.close()


# ------------------------------------------------------------------------------------------ list


@dlq.command(name="list")
@kafka_option
@registry_option
@click.option("--topic", "topics", multiple=True, help="DLQ topic (repeatable); default: every topic ending in .dlq.")
@click.option("--samples", type=click.IntRange(0, 100), default=3, show_default=True,
              help="Decoded sample records per topic.")
@click.option("--format", "fmt", type=click.Choice(["json", "avro"]), default="json", show_default=True,
              help="Converter of the parked records (avro needs --registry).")
@click.option("--json", "as_json", is_flag=True, help="One JSON document instead of text.")
def list_(kafka: KafkaSettings, registry: str, topics: tuple[str, ...], samples: int, fmt: str, as_json: bool) -> None:
    """Counts by reason and source topic, and a few decoded samples."""
    decode = make_decoder(fmt, registry)
    report: list[dict[str, Any]] = []
    for topic in topics or _dlq_topics(kafka):
        parked = read_parked(kafka, topic)
        counts = Counter((parked_reason(p.info), p.info.get("cdc.original.topic", "?")) for p in parked)
        pending = Counter((parked_reason(p.info), p.info.get("cdc.original.topic", "?"))
                          for p in _not_replayed(kafka, topic, parked))
        report.append({
            "topic": topic, "records": len(parked),
            "by_reason": [{"reason": reason, "source_topic": source, "records": n, "not_replayed": pending[(reason, source)]}
                          for (reason, source), n in counts.most_common()],
            "samples": [_sample(decode, p) for p in parked[-samples:]] if samples else [],
        })
    if as_json:
        click.echo(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
        return
    if not report:
        click.echo("no DLQ topics")
    for entry in report:
        click.echo(f"{entry['topic']}: {entry['records']} record(s)")
        for row in entry["by_reason"]:
            click.echo(f"  {row['records']:>8}  {row['reason']:<24} from {row['source_topic']}"
                       f"  ({row['not_replayed']} not replayed)")
        for sample in entry["samples"]:
            click.echo(f"  sample {sample['partition']}@{sample['offset']} attempt {sample['attempt']}: "
                       f"{sample['error']}")
            click.echo(f"    {orjson.dumps(sample['decoded']).decode()[:300]}")


def _not_replayed(kafka: KafkaSettings, topic: str, parked: list[Parked]) -> list[Parked]:
    """The records no replay has passed yet: an unfiltered replay's group passes every record, a
    `--reason R` replay's group (one per R) passes only the records R matches (their type or tag)."""
    if not parked:
        return []
    partitions = {p.partition for p in parked}
    reasons = {None} | {r for p in parked for r in (p.info.get("cdc.error.type"), p.info.get("cdc.error.reason")) if r}
    replayed = {reason: _replayed_up_to(kafka, topic, replay_group(topic, reason), partitions) for reason in reasons}
    return [p for p in parked
            if all(p.offset >= replayed[reason].get(p.partition, 0) for reason in reasons
                   if reason is None or matches_reason(p.info, reason))]


def _sample(decode, parked: Parked) -> dict:
    source = parked.info.get("cdc.original.topic", "")
    try:
        event = decode(RecordContext(source, parked.partition, parked.offset, None, parked.headers, parked.key),
                       parked.value)
        decoded = event_to_json(event)
    except Exception as exc:  # noqa: BLE001 - the sample shows why it does not decode
        decoded = {"undecodable": f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"}
    return {"partition": parked.partition, "offset": parked.offset, "attempt": parked.info.get("cdc.dlq.attempt", "1"),
            "error": f"{parked.info.get('cdc.error.type', '?')}: {parked.info.get('cdc.error', '')}"[:300],
            "decoded": decoded}


# ------------------------------------------------------------------------------------------ replay


@dlq.command()
@kafka_option
@cassandra_options
@registry_option
@click.option("--topic", required=True, help="The DLQ topic to replay, e.g. cdc.public.klines.dlq.")
@click.option("--reason", default=None, help="Only records of this error type or reason tag "
              "(e.g. UnmappableRecord, invalid_value).")
@click.option("--dry-run", is_flag=True, help="Decode and map only: report what would be applied or parked again.")
@click.option("--mapping", "mapping_file", type=click.Path(dir_okay=False), default=None,
              help="Mapping YAML (default: the packaged cdc_consumer/mapping.yaml).")
@click.option("--format", "fmt", type=click.Choice(["json", "avro"]), default="json", show_default=True)
@click.option("--timeout", type=click.FloatRange(1), default=600.0, show_default=True,
              help="Seconds before giving up (exit 1); what was applied is committed.")
def replay(kafka: KafkaSettings, cassandra_hosts: str, cassandra_keyspace: str, registry: str, topic: str,
           reason: str | None, dry_run: bool, mapping_file: str | None, fmt: str, timeout: float) -> None:
    """Re-apply parked records through the current decoder and mapping; re-park those that still fail."""
    with mapped_session(cassandra_hosts, cassandra_keyspace, mapping_file, fmt, registry,
                        kafka) as (session, keyspace, mapping, decode):
        group = replay_group(topic, reason)
        if dry_run:
            _dry_run(kafka, topic, group, reason, decode, mapping)
        else:
            _replay(kafka, topic, group, reason, decode, mapping, session, timeout)


def _original_topic_decoder(decode):
    """Decode a parked record as a record of the topic it was consumed from (the mapping checks topics)."""
    def decode_parked(record: RecordContext, value):
        original = header_map(record.headers).get("cdc.original.topic") or record.topic
        return decode(dataclasses.replace(record, topic=original), value)
    return decode_parked


def _replay_filter(reason: str | None, ends: dict[int, int]):
    """Records past the end seen at start (e.g. the ones this replay parks again) are left for the next
    replay; records of another reason are passed over (this replay's group commits past them)."""
    def accept(message):
        if message.offset() >= ends.get(message.partition(), 0):
            return IGNORE
        if reason is not None and not matches_reason(header_map(message.headers()), reason):
            return "other_reason"
        return None
    return accept


def _replay(kafka, topic, group, reason, decode, mapping, session, timeout) -> None:
    client = _client(kafka)
    try:
        ends = {p: high for p, (_, high) in _ends(client, topic).items()}
    finally:
        client.close()
    start = _replayed_up_to(kafka, topic, group, ends)
    todo = {p: end for p, end in ends.items() if end > start.get(p, 0)}
    if not todo:
        click.echo(f"{topic}: nothing to replay (group {group} is at the end)")
        return
    settings = ConsumerSettings(kafka.bootstrap, group, (topic,), pause_warning_every=10.0,
                                kafka_config=dict(kafka.properties))
    consumer = ChangeConsumer(settings, _original_topic_decoder(decode), mapping, CassandraSink(session),
                              ReparkingQueue(kafka.bootstrap, topic, kafka=kafka),
                              record_filter=_replay_filter(reason, ends),
                              kafka_consumer=functools.partial(kafka_clients.consumer, kafka))
    finished = _UntilReplayed(consumer, todo, timeout)
    try:
        consumer.run(finished)
    except FatalError as exc:
        raise click.ClickException(f"{exc.edge}: {exc.message}") from exc
    totals = consumer.totals
    click.echo(f"{topic}: replayed {totals.consumed} record(s): applied {totals.applied}, parked again "
               f"{totals.dlq}, skipped {totals.skipped} (group {group})")
    if finished.timed_out:
        raise click.ClickException(f"replay of {topic} did not finish within {timeout:.0f}s; run it again to resume")


class _UntilReplayed:
    """The replay's stop signal: set once every partition's done position reached its end at start."""

    def __init__(self, consumer: ChangeConsumer, ends: dict[int, int], timeout: float) -> None:
        self.consumer, self.ends = consumer, ends
        self.deadline = time.monotonic() + timeout
        self.timed_out = False

    def is_set(self) -> bool:
        if time.monotonic() > self.deadline:
            self.timed_out = True
            return True
        progress = self.consumer.progress
        for partition, end in self.ends.items():
            state = next((v for (t, p), v in progress.items() if p == partition), None)
            if state is None or state.position is None or state.position < end:
                return False
        return True


def _dry_run(kafka, topic, group, reason, decode, mapping) -> None:
    decode = _original_topic_decoder(decode)
    parked_records = read_parked(kafka, topic)
    start = _replayed_up_to(kafka, topic, group, {p.partition for p in parked_records})
    outcomes: Counter = Counter()
    for parked in parked_records:
        if parked.offset < start.get(parked.partition, 0) or not matches_reason(parked.info, reason):
            continue
        try:
            event = decode(RecordContext(topic, parked.partition, parked.offset, None, parked.headers, parked.key),
                           parked.value)
            writes = mapping.writes(event) if event.op is not None and not mapping.is_skipped(event) else []
            outcomes["would apply" if writes else "would skip"] += 1
        except Exception as exc:  # noqa: BLE001 - the dry run reports why
            outcomes[f"would park again: {type(exc).__name__}: {getattr(exc, 'reason', exc)}"[:200]] += 1
    if not outcomes:
        click.echo(f"{topic}: nothing to replay")
    for outcome, count in outcomes.most_common():
        click.echo(f"{count:>8}  {outcome}")
    click.echo("(dry run: nothing written, nothing committed; Cassandra's own rejections only show in a real replay)")

