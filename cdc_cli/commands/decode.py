"""`cdc decode`: print Debezium records as exact JSON, one object per record.

Records come from a file of `{"topic", "key", "value"}` lines (the fixtures' format; with `--format avro`
key/value are base64 of the wire bytes; optional "headers": [[name, text], ...], "partition", "offset")
or from a Kafka topic. A record that cannot be decoded prints `{"error": ...}` and the command goes on;
the exit status is 1 when any record failed.
"""

from __future__ import annotations

import binascii
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any, NamedTuple

import click
import orjson

from cdc_cli.commands.options import kafka_option, registry_client, registry_option
from cdc_consumer.config import KafkaSettings
from cdc_consumer.errors import DecodeError
from cdc_consumer.render import event_to_json, to_jsonable


class RawRecord(NamedTuple):
    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]] | None
    partition: int | None
    offset: int | None


class BadLine(ValueError):
    """An input line that is not a `{"topic", "key", "value"}` record."""


@click.command()
@click.option("--input", "input_file", type=click.File("rb"), default=None,
              help="File of {topic,key,value} JSON lines ('-' for stdin).")
@click.option("--topic", default=None, help="Read this Kafka topic instead of a file.")
@click.option("--from-beginning", is_flag=True, help="With --topic: start at the earliest offset (default: new records).")
@click.option("--max", "max_records", type=click.IntRange(min=1), default=None, help="Stop after N records.")
@click.option("--timeout", "idle_timeout", type=click.FloatRange(min=0, min_open=True), default=None,
              help="With --topic: stop when no record arrived for this many seconds (default: wait forever).")
@click.option("--format", "fmt", type=click.Choice(["json", "avro"]), default="json", show_default=True,
              help="Converter that wrote the records.")
@click.option("--schemas", "schemas_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Avro: a schemas file (format of pg_avro_confluent.schemas.json) instead of the registry.")
@registry_option
@kafka_option
def decode(input_file, topic: str | None, from_beginning: bool, max_records: int | None,
           idle_timeout: float | None, fmt: str, schemas_file: str | None, registry: str, kafka: KafkaSettings) -> None:
    """Decode Debezium change events exactly and print one JSON object per record."""
    if (input_file is None) == (topic is None):
        raise click.UsageError("give exactly one of --input FILE (or -) and --topic T")
    if topic is None and (from_beginning or idle_timeout is not None):
        raise click.UsageError("--from-beginning and --timeout apply to --topic only")
    decoder = _make_decoder(fmt, registry, schemas_file)
    if input_file is not None:
        records = _file_records(input_file, base64_bytes=(fmt == "avro"))
    else:
        assert topic is not None, "exactly one of --input and --topic (checked above)"
        records = _kafka_records(kafka, topic, from_beginning, idle_timeout)
    failed = _print_decoded(decoder, records, max_records)
    if failed:
        click.echo(f"{failed} record(s) could not be decoded", err=True)
        sys.exit(1)


def _make_decoder(fmt: str, registry: str, schemas_file: str | None):
    if fmt == "json":
        from cdc_consumer.decoder import Decoder

        return Decoder()
    from cdc_consumer.avro import AvroDecoder
    from cdc_consumer.schema_registry import SchemaFile

    if schemas_file is None:
        return AvroDecoder(registry_client(registry))
    try:
        return AvroDecoder(SchemaFile(schemas_file))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--schemas") from exc


def _print_decoded(decoder, records: Iterator[RawRecord | BadLine], max_records: int | None) -> int:
    """Decode and print each record (flushed per line: `--topic` output is live); returns how many failed."""
    failed = 0
    for count, record in enumerate(records, start=1):
        document = _decoded_document(decoder, record)
        try:
            line = orjson.dumps(document)
        except orjson.JSONEncodeError:  # e.g. a schema-less payload nested deeper than JSON output allows
            document = {"error": f"{_record_name(record)}: the decoded record cannot be printed as JSON"}
            line = orjson.dumps(document)
        failed += "error" in document
        click.echo(line)
        if max_records is not None and count >= max_records:
            break
    return failed


def _decoded_document(decoder, record: RawRecord | BadLine) -> dict[str, Any]:
    if isinstance(record, BadLine):
        return {"error": str(record)}
    try:
        event = decoder.decode(*record)
        document = event_to_json(event)
        document.update(to_jsonable(decoder.key_headers(event.headers)))
        return document
    except DecodeError as exc:
        return {"error": str(exc)}
    except RecursionError:  # to_jsonable of a schema-less payload nested too deeply
        return {"error": f"{_record_name(record)}: the decoded record is nested too deeply to print"}


def _record_name(record: RawRecord | BadLine) -> str:
    if isinstance(record, BadLine):
        return "bad line"
    return f"{record.topic[:200]}[{record.partition}]@{record.offset}"


def _file_records(stream, *, base64_bytes: bool) -> Iterator[RawRecord | BadLine]:
    for number, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        try:
            yield _parse_line(line, base64_bytes)
        except BadLine as exc:
            yield BadLine(f"line {number}: {exc}")


def _parse_line(line: bytes, base64_bytes: bool) -> RawRecord:
    try:
        entry = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise BadLine(f"not JSON: {str(exc)[:200]}") from None
    if not isinstance(entry, dict) or not isinstance(entry.get("topic"), str):
        raise BadLine('expected an object {"topic", "key", "value"}')
    return RawRecord(entry["topic"], _field_bytes(entry.get("key"), base64_bytes, "key"),
                     _field_bytes(entry.get("value"), base64_bytes, "value"), _headers(entry.get("headers")),
                     _position(entry, "partition"), _position(entry, "offset"))


def _headers(headers: Any) -> list[tuple[str, bytes | None]] | None:
    """"headers": [[name, text or null], ...] as confluent-kafka gives them: [(name, bytes or None)]."""
    if headers is None:
        return None
    if not isinstance(headers, list):
        raise BadLine("headers must be a list of [name, value] pairs")
    pairs = []
    for pair in headers:
        if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str)):
            raise BadLine("headers must be a list of [name, value] pairs with a string name")
        pairs.append((pair[0], _field_bytes(pair[1], False, "a header value")))
    return pairs


def _position(entry: dict[str, Any], name: str) -> int | None:
    value = entry.get(name)
    if value is not None and (value.__class__ is not int or value < 0):
        raise BadLine(f"{name} must be a non-negative integer or null")
    return value


def _field_bytes(text: Any, base64_bytes: bool, what: str) -> bytes | None:
    if text is None:
        return None
    if not isinstance(text, str):
        raise BadLine(f"{what} must be a string or null")
    if not base64_bytes:
        return text.encode(errors="surrogatepass")  # a lone surrogate escape stays for the decoder to reject
    try:
        return binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError) as exc:  # ValueError: a non-ASCII character
        raise BadLine(f"{what} is not base64: {exc}") from None


def _kafka_records(kafka: KafkaSettings, topic: str, from_beginning: bool,
                   idle_timeout: float | None) -> Iterator[RawRecord]:
    """Records of every partition of `topic`, read without a consumer group (nothing is committed)."""
    from confluent_kafka import (
        OFFSET_BEGINNING,
        OFFSET_END,
        KafkaError,
        TopicPartition,
    )

    from cdc_consumer import kafka_clients

    watch = kafka_clients.ErrorWatch(kafka)
    consumer = kafka_clients.consumer(kafka, {"group.id": f"cdc-decode-{uuid.uuid4().hex[:12]}",
                                              "enable.auto.commit": False, "enable.partition.eof": False},
                                      watch=watch)
    try:
        try:
            partitions = kafka_clients.metadata(consumer, kafka, watch, timeout=10, topic=topic).topics.get(topic)
        except kafka_clients.KafkaUnavailable as exc:
            raise click.ClickException(str(exc)) from None
        if partitions is None or partitions.error is not None:
            raise click.ClickException(f"topic {topic!r}: {partitions.error.str() if partitions else 'not found'}")
        start = OFFSET_BEGINNING if from_beginning else OFFSET_END
        consumer.assign([TopicPartition(topic, p, start) for p in sorted(partitions.partitions)])
        last_record = time.monotonic()
        while idle_timeout is None or time.monotonic() - last_record < idle_timeout:
            message = consumer.poll(0.5)
            if message is None:
                continue
            error = message.error()
            if error is not None:
                if error.fatal():
                    raise click.ClickException(f"Kafka: {error.str()}")
                if error.code() != KafkaError._PARTITION_EOF:
                    click.echo(f"Kafka: {error.str()}", err=True)
                continue
            last_record = time.monotonic()
            topic_name, partition, offset, headers = kafka_clients.consumed(message)
            yield RawRecord(topic_name, message.key(), message.value(), headers, partition, offset)
    finally:
        consumer.close()
