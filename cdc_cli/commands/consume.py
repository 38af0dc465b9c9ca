"""`cdc consume`: Debezium topics -> Cassandra time-series tables, exactly once in effect.

Start-up checks everything before reading a record: the mapping file, its fit with the Cassandra tables
(system_schema), the DLQ topic template. A wrong mapping exits 2 with every problem listed.
SIGTERM / Ctrl-C: drain in-flight writes, commit, leave the group, exit 0 (1 if the drain timed out).
"""

from __future__ import annotations

import functools
import gc
import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click
import orjson

from cdc_cli.commands.options import (
    cassandra_options,
    cassandra_settings,
    kafka_option,
    registry_client,
    registry_option,
)
from cdc_consumer import cql_session, kafka_clients
from cdc_consumer.config import KafkaSettings
from cdc_consumer.consumer import (
    DEFAULT_TOPICS,
    ON_TRUNCATE,
    ChangeConsumer,
    ConsumerSettings,
)
from cdc_consumer.dlq import DEFAULT_TOPIC_TEMPLATE, DeadLetterQueue, dlq_topic
from cdc_consumer.errors import FatalError, MappingError
from cdc_consumer.evolution import SchemaEvolution
from cdc_consumer.identifiers import InvalidIdentifier, validate_identifier
from cdc_consumer.mapping import CompiledMapping, compile_mapping, describe_tables, load_mapping
from cdc_consumer.metrics import ConsumerMetrics
from cdc_consumer.pause_state import PauseStateFile
from cdc_consumer.pg import ServiceUnavailable
from cdc_consumer.sink import CassandraSink

log = logging.getLogger("cdc_consumer.consume")


class StartupError(click.ClickException):
    """A configuration problem found before consuming (mapping, schema, options): exit 2."""

    exit_code = 2


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line; `extra` fields of progress lines become keys."""

    _STANDARD = frozenset(vars(logging.makeLogRecord({})))

    def format(self, record: logging.LogRecord) -> str:
        entry = {"ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"), "level": record.levelname,
                 "logger": record.name, "message": record.getMessage()}
        entry.update({k: v for k, v in vars(record).items() if k not in self._STANDARD and k != "message"})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def make_decoder(fmt: str, registry: str):
    """The decode callable `(RecordContext, value) -> ChangeEvent`."""
    if fmt == "avro":
        from cdc_consumer.avro import (
            AvroDecoder,  # imported lazily: only Avro users need the registry client
        )

        return AvroDecoder(registry_client(registry)).decode_record
    from cdc_consumer.decoder import Decoder

    return Decoder().decode_record


def _configure_logging(log_format: str) -> None:
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=logging.INFO)
    if log_format == "json":
        for handler in root.handlers:
            handler.setFormatter(JsonLogFormatter())
    for noisy in ("cassandra", "kafka"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@click.command()
@kafka_option
@cassandra_options
@registry_option
@click.option("--group", default="cdc-consume", show_default=True, envvar="CDC_CONSUMER_GROUP",
              help="Kafka consumer group (several processes in one group share the partitions).")
@click.option("--topics", default=DEFAULT_TOPICS, show_default=True,
              help="Comma-separated topics; an entry starting with ^ is a regular expression.")
@click.option("--mapping", "mapping_file", type=click.Path(dir_okay=False), default=None,
              help="Mapping YAML (default: the packaged cdc_consumer/mapping.yaml).")
@click.option("--format", "fmt", type=click.Choice(["json", "avro"]), default="json", show_default=True,
              help="Converter the connector uses (avro needs --registry).")
@click.option("--dlq-topic", "dlq_template", default=DEFAULT_TOPIC_TEMPLATE, show_default=True,
              help="Dead-letter topic template; {topic} is the source topic.")
@click.option("--on-truncate", type=click.Choice(ON_TRUNCATE), default="ignore", show_default=True,
              help="A TRUNCATE event: log and skip it, or park it in the DLQ.")
@click.option("--from-beginning", is_flag=True,
              help="Replay assigned partitions from their first offset (writes are idempotent).")
@click.option("--batch-size", type=click.IntRange(1, 100000), default=2000, show_default=True,
              help="Records per poll and at most per Cassandra flush.")
@click.option("--max-in-flight", type=click.IntRange(1, 1024), default=32, show_default=True,
              help="Cassandra requests awaiting acknowledgement at most.")
@click.option("--max-batch-rows", type=click.IntRange(1, 1000), default=25, show_default=True,
              help="Rows per single-partition UNLOGGED batch at most.")
@click.option("--metrics-port", type=click.IntRange(1, 65535), default=None,
              help="Serve Prometheus metrics on 127.0.0.1:PORT/metrics.")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="Log lines as text or as one JSON object each (progress lines carry their figures).")
@click.option("--progress-every", type=click.FloatRange(0), default=10.0, show_default=True,
              help="Seconds between progress lines (events/s, lag, DLQ count); 0 = none.")
@click.option("--drain-timeout", type=click.FloatRange(0), default=30.0, show_default=True,
              help="Seconds to wait for in-flight writes on shutdown or partition revoke.")
def consume(kafka: KafkaSettings, cassandra_hosts: str, cassandra_keyspace: str, registry: str, group: str, topics: str,
            mapping_file: str | None, fmt: str, dlq_template: str, on_truncate: str, from_beginning: bool,
            batch_size: int, max_in_flight: int, max_batch_rows: int, metrics_port: int | None, log_format: str,
            progress_every: float, drain_timeout: float) -> None:
    """Apply Debezium change events from Kafka to the Cassandra tables of the mapping."""
    _configure_logging(log_format)
    try:
        dlq_topic(dlq_template, "x")
    except ValueError as exc:
        raise StartupError(str(exc)) from exc
    with mapped_session(cassandra_hosts, cassandra_keyspace, mapping_file, fmt, registry,
                        kafka) as (session, keyspace, mapping, decode):
        metrics = ConsumerMetrics()
        if metrics_port:
            try:
                metrics.serve(metrics_port)
            except OSError as exc:
                raise StartupError(f"--metrics-port {metrics_port}: {exc.strerror}") from exc
        consumer = ChangeConsumer(
            ConsumerSettings(kafka.bootstrap, group, tuple(t.strip() for t in topics.split(",") if t.strip()),
                             from_beginning, batch_size, on_truncate=on_truncate, drain_timeout=drain_timeout,
                             progress_every=progress_every, kafka_config=dict(kafka.properties)),
            decode, mapping,
            CassandraSink(session, max_batch_rows=max_batch_rows, max_in_flight=max_in_flight, metrics=metrics),
            DeadLetterQueue(kafka.bootstrap, topic_template=dlq_template, kafka=kafka), metrics, PauseStateFile(group),
            evolution=SchemaEvolution(session, keyspace, mapping, metrics),
            kafka_consumer=functools.partial(kafka_clients.consumer, kafka))
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        _tune_gc()
        try:
            drained = consumer.run(stop)
        except FatalError as exc:  # permanent for the process: a clear message, exit 1, no traceback
            raise click.ClickException(f"{exc.edge}: {exc.message}") from exc
    if not drained:
        raise SystemExit(1)


@contextmanager
def mapped_session(cassandra_hosts: str, cassandra_keyspace: str, mapping_file: str | None, fmt: str,
                   registry: str, kafka: KafkaSettings) -> Iterator[tuple[Any, str, CompiledMapping, Any]]:
    """Check the options, probe Kafka, connect to Cassandra and compile the mapping against its live tables;
    yields (session, keyspace, mapping, decode) and shuts the cluster down after. A configuration problem
    exits 2."""
    try:
        keyspace = validate_identifier(cassandra_keyspace, what="keyspace")
        spec = load_mapping(mapping_file)
        decode = make_decoder(fmt, registry)
    except ImportError as exc:
        raise StartupError(f"--format {fmt} is not available: {exc}") from exc
    except (InvalidIdentifier, MappingError, ValueError) as exc:
        raise StartupError(str(exc)) from exc
    try:
        kafka_clients.probe(kafka)  # a wrong password or CA fails here, named, instead of a silent retry loop
        cluster, session = cql_session.connect(cassandra_settings(cassandra_hosts, keyspace))
    except (ServiceUnavailable, kafka_clients.KafkaUnavailable) as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        mapping = _compile_against_live_tables(session, keyspace, spec)
        yield session, keyspace, mapping, decode
    finally:
        cluster.shutdown()


def _compile_against_live_tables(session: Any, keyspace: str, spec: Any) -> CompiledMapping:
    """The mapping checked against the keyspace's tables, its statements prepared. A mapping that does not
    fit exits 2; Cassandra failing meanwhile (e.g. shutting down) exits 1 naming it, without a traceback."""
    try:
        schemas = describe_tables(session, keyspace)
        if not schemas:
            raise StartupError(f"Cassandra keyspace {keyspace!r} has no tables (run `cdc init`)")
        return compile_mapping(spec, schemas, session.prepare, keyspace)
    except MappingError as exc:
        raise StartupError(str(exc)) from exc
    except StartupError:
        raise
    except Exception as exc:  # noqa: BLE001 - a driver error before any record was read
        error = cql_session.classify_cassandra_error(exc)
        raise click.ClickException(f"cassandra: {error.message} (at start-up, reading the schema or "
                                   "preparing statements)") from None


def _tune_gc() -> None:
    """The loop allocates a few dicts and lists per event, freed by reference counting; the cyclic GC's
    default gen-0 threshold (700 allocations) would run it every few dozen events. Start-up objects
    (modules, compiled schemas and mappings) are frozen so full collections skip them. +5% events/s in
    the consumer benchmark (three interleaved runs each)."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
