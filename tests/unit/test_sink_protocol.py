"""The Sink protocol (cdc_consumer/sink_protocol.py): the Cassandra sink and the DLQ both satisfy it, each
hands a token back only once all of that record's writes are acknowledged, and the consumer drives a sink
through the protocol alone (a fake sink: offsets are committed only past the tokens it hands back)."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

import pytest

from cdc_consumer import kafka_clients
from cdc_consumer.consumer import ChangeConsumer, ConsumerSettings
from cdc_consumer.cql_schema import TargetStatements
from cdc_consumer.dlq import DeadLetter, DeadLetterQueue
from cdc_consumer.errors import FatalError, PermanentRecordError
from cdc_consumer.events import ChangeEvent, Op, RecordContext, Source
from cdc_consumer.mapping import compile_mapping, load_mapping
from cdc_consumer.sink import CassandraSink
from cdc_consumer.sink_protocol import Sink
from tests.unit.cql_tables import cql_table_schemas
from tests.unit.fakes import FakeKafkaConsumer, FakeMessage

# ------------------------------------------------------------------------- both implementations


class FakeProducer:
    """confluent_kafka.Producer's produce/poll/flush: poll serves the delivery reports the test released."""

    def __init__(self) -> None:
        self.produced: list[tuple[str, bytes | None, list]] = []
        self._sent: list = []
        self._reports: list = []
        self.fail_with = None  # a KafkaError every delivery reports, or None

    def produce(self, topic, value=None, key=None, headers=None, on_delivery=None):
        self.produced.append((topic, value, headers))
        self._sent.append(on_delivery)

    def deliver(self) -> None:
        """The broker answers every message produced so far (its reports are served by the next poll)."""
        self._reports.extend(self._sent)
        self._sent = []

    def poll(self, timeout=0.0):
        reports, self._reports = self._reports, []
        for report in reports:
            report(self.fail_with, None)
        return len(reports)

    def flush(self, timeout=0.0):
        return self.poll(timeout)


@pytest.fixture
def producer(monkeypatch) -> FakeProducer:
    fake = FakeProducer()
    monkeypatch.setattr(kafka_clients, "producer", lambda settings, config: fake)
    return fake


def test_both_sinks_satisfy_the_protocol(producer):
    assert isinstance(CassandraSink(session=None), Sink)
    assert isinstance(DeadLetterQueue("127.0.0.1:1", create_topics=False), Sink)


def letter(offset: int) -> DeadLetter:
    return DeadLetter(RecordContext("cdc.public.t", 0, offset, headers=[("trace", b"1")], key=b"k"), b"v",
                      PermanentRecordError("not JSON", edge="decoder", reason="undecodable", error_class="InvalidJson"))


def test_the_dlq_hands_a_token_back_once_every_letter_is_acknowledged(producer):
    dlq = DeadLetterQueue("127.0.0.1:1", create_topics=False)
    dlq.add("two", [letter(1), letter(2)])
    dlq.add("none", [])
    assert (dlq.buffered, dlq.in_flight) == (0, 2)
    assert dlq.poll() == ["none"]  # nothing to deliver: done at once
    assert [topic for topic, _, _ in producer.produced] == ["cdc.public.t.dlq", "cdc.public.t.dlq"]
    assert producer.produced[0][2] == [
        ("trace", b"1"), ("cdc.error", b"not JSON"), ("cdc.error.type", b"InvalidJson"), ("cdc.error.edge", b"decoder"),
        ("cdc.error.class", b"InvalidJson"), ("cdc.error.reason", b"undecodable"),
        ("cdc.original.topic", b"cdc.public.t"), ("cdc.original.partition", b"0"), ("cdc.original.offset", b"1"),
        ("cdc.dlq.attempt", b"1")]
    assert dlq.poll() == []  # produced, not acknowledged
    producer.deliver()
    assert dlq.poll() == ["two"]
    assert dlq.in_flight == 0 and dlq.rejected() == [] and dlq.drain(1) and dlq.close(1)


def test_an_undeliverable_letter_makes_the_dlq_flush_fatal(producer):
    from confluent_kafka import KafkaError

    dlq = DeadLetterQueue("127.0.0.1:1", create_topics=False)
    producer.fail_with = KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED)
    dlq.add("token", [letter(1)])
    dlq.flush()  # the delivery report has not come yet
    producer.deliver()
    assert dlq.poll() == []  # never acknowledged: never committed past
    with pytest.raises(FatalError, match="not writable"):
        dlq.flush()


class FakeBinder:
    def bind(self, values):
        return tuple(values)


class FakeFuture:
    def __init__(self, session, statement) -> None:
        self.session, self.statement = session, statement

    def add_callbacks(self, callback, errback, callback_args=(), errback_args=()):
        self.session.callbacks.append((self.statement, callback, errback, callback_args, errback_args))


class FakeSession:
    """execute_async whose requests complete when the test says (the driver calls back on its thread)."""

    def __init__(self) -> None:
        self.callbacks: list = []

    def execute_async(self, statement):
        return FakeFuture(self, statement)

    def complete(self, error: Exception | None = None) -> None:
        callbacks, self.callbacks = self.callbacks, []
        for _, callback, errback, callback_args, errback_args in callbacks:
            if error is None:
                callback(None, *callback_args)
            else:
                errback(error, *errback_args)


def book_event(level: int, ts_us: int) -> ChangeEvent:
    row = {"symbol": "BTCUSDT", "side": "bid", "level": level, "price": Decimal("1.5"), "quantity": Decimal("2")}
    return ChangeEvent(topic="cdc.public.order_book", partition=0, offset=0, op=Op.CREATE, key=None, before=None,
                       after=row, source=Source(ts_us, 1, 1, None, "cdc", "public", "order_book"))


@pytest.fixture
def mapping_with_fake_statements():
    """The packaged mapping, each writer built with statements whose binders return the bound values."""
    mapping = compile_mapping(load_mapping(), cql_table_schemas())
    statements = TargetStatements(None, None, FakeBinder(), FakeBinder())
    for table in mapping.tables.values():
        table.targets = tuple(dataclasses.replace(w, statements=statements) for w in table.targets)
    return mapping


def test_the_cassandra_sink_hands_a_token_back_once_every_write_is_acknowledged(mapping_with_fake_statements):
    session = FakeSession()
    sink = CassandraSink(session, max_batch_rows=1)
    writes = mapping_with_fake_statements.writes(book_event(0, 1_000))
    sink.add("first", writes)
    sink.add("empty", [])
    assert (sink.buffered, sink.in_flight) == (2, 0)
    sink.flush()
    assert (sink.buffered, sink.in_flight) == (0, len(writes))
    assert sink.poll() == []  # sent, not acknowledged
    session.complete()
    assert sink.poll() == ["first", "empty"]
    assert sink.drain(1) and sink.close(1)


def test_the_cassandra_sink_hands_back_a_rejected_record_with_its_error(mapping_with_fake_statements):
    from cassandra import InvalidRequest

    session = FakeSession()
    sink = CassandraSink(session, max_batch_rows=1)
    sink.add("bad", mapping_with_fake_statements.writes(book_event(0, 1_000)))
    sink.flush()
    session.complete(InvalidRequest("value out of range"))
    assert sink.poll() == []
    session.complete(InvalidRequest("value out of range"))  # re-sent alone, rejected again
    assert sink.poll() == []
    (token, error), = sink.rejected()
    assert token == "bad" and isinstance(error, PermanentRecordError) and "value out of range" in error.message


# --------------------------------------------------------------------- the consumer, through the protocol


class ProtocolSink:
    """A Sink that only records what the consumer does; tokens come back when the test acknowledges them."""

    def __init__(self) -> None:
        self.added: list = []
        self.acked: list = []
        self.refused: list = []
        self.flushes = 0

    @property
    def buffered(self) -> int:
        return 0

    @property
    def in_flight(self) -> int:
        return len(self.added)

    def add(self, token, writes):
        self.added.append((token, list(writes)))

    def flush(self):
        self.flushes += 1

    def poll(self, timeout=0.0):
        acked, self.acked = self.acked, []
        return acked

    def rejected(self):
        refused, self.refused = self.refused, []
        return refused

    def drain(self, timeout):
        return True

    def close(self, timeout):
        return True


class WritesPerRecord:
    """A mapping that turns every event into one write, the event's offset."""

    def is_skipped(self, event):
        return False

    def writes(self, event):
        return [event.offset]


def test_the_consumer_commits_only_past_tokens_a_sink_hands_back():
    def decode(record: RecordContext, value):
        return ChangeEvent(topic=record.topic, partition=record.partition, offset=record.offset, op=Op.CREATE,
                           key=None, before=None, after={"id": record.offset},
                           source=Source(1_000, 1, 1, None, "cdc", "public", "klines"))

    sink, dlq = ProtocolSink(), ProtocolSink()
    assert isinstance(sink, Sink)
    settings = ConsumerSettings("127.0.0.1:1", "g", ("cdc.public.klines",), batch_size=100, progress_every=0,
                                lag_every=10**9, commit_interval=0)
    kafka = FakeKafkaConsumer()
    consumer = ChangeConsumer(settings, decode, WritesPerRecord(), sink, dlq, kafka_consumer=kafka)
    consumer.start()
    kafka.rebalance(("cdc.public.klines", 0))
    consumer.poll_once()
    for offset in (10, 11, 12):
        consumer._handle(FakeMessage("cdc.public.klines", 0, offset))
    assert [writes for _, writes in sink.added] == [[10], [11], [12]]
    first, second, third = (token for token, _ in sink.added)
    sink.acked = [first]
    sink.refused = [(second, PermanentRecordError("refused", edge="cassandra", reason="invalid_request"))]
    consumer._step()
    # past the acknowledged record only: the refused one is not parked yet
    assert [c[("cdc.public.klines", 0)] for c in kafka.commits] == [11]
    ((token, (parked,)),) = dlq.added
    origin = parked.record
    assert token is second and (origin.topic, origin.partition, origin.offset) == ("cdc.public.klines", 0, 11)
    assert (origin.key, parked.value, parked.error.reason) == (b"k", b"v", "invalid_request")
    dlq.acked, sink.acked = [second], [third]
    consumer._step()
    assert [c[("cdc.public.klines", 0)] for c in kafka.commits] == [11, 13]
    assert sink.flushes and dlq.flushes  # both asked to flush (where backpressure and fatal errors surface)
