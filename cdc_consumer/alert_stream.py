"""`cdc alerts` run loop: ticker change events from Kafka -> PriceMoveEngine -> Alertmanager.

Delivery: offsets are committed manually, and only after the alerts that a batch of records produced
were accepted by Alertmanager, so every change event is evaluated once for delivery (a crash before the
commit re-evaluates the batch; Alertmanager merges a repeated alert with the same labels and startsAt).

Restarts and rebalances (state is rebuilt, never stored): on every partition assignment the windows are
dropped, each partition is rewound to the first offset whose record time is at or after
`now - longest window - replay margin` (`offsets_for_times`), and the records up to the group's
committed offset are replayed into the windows *without sending*. Replayed alerts are therefore known as
already delivered, with the same startsAt (the engine's times are event times). Before consuming,
Alertmanager's active `PriceMove` alerts of this source are adopted, so an alert whose window cannot be
replayed (e.g. Kafka retention) is refreshed rather than fired anew. A group with no committed offset
replays the window up to the end of each partition and starts live from there.

Run one instance per group: Debezium spreads one symbol's rows over all partitions, so instances sharing
the group would each hold part of every window.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING

from cdc_consumer.alertmanager import AlertmanagerClient, AlertmanagerUnavailable, epoch_ms
from cdc_consumer.config import KafkaSettings
from cdc_consumer.decoder import Decoder
from cdc_consumer.errors import DecodeError
from cdc_consumer.events import Op, RecordContext
from cdc_consumer.price_alerts import ALERT_NAME, SOURCE_LABEL, AlertUpdate, PriceMoveEngine

if TYPE_CHECKING:  # confluent_kafka is imported where it is used (the CLI starts without it)
    from confluent_kafka import Consumer

log = logging.getLogger(__name__)

_LIVE_OPS = (Op.CREATE, Op.UPDATE, Op.READ)


class AlertMetrics:
    """Prometheus series of `cdc alerts` (`--metrics-port`), on their own registry."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = r = CollectorRegistry()
        self.records = Counter("cdc_alerts_records", "Ticker change records read, by what was done with them "
                               "(evaluated, replayed, skipped, undecodable)", ["outcome"], registry=r)
        self.pushed = Counter("cdc_alerts_pushed", "Alerts accepted by Alertmanager, by state", ["state"], registry=r)
        self.push_failures = Counter("cdc_alerts_alertmanager_failures", "Alertmanager requests that failed "
                                     "(retried)", registry=r)
        self.active = Gauge("cdc_alerts_active", "Price-move alerts currently active", registry=r)
        self.push_latency = Histogram("cdc_alerts_push_seconds", "Duration of one successful push to "
                                      "Alertmanager", buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
                                      registry=r)

    def serve(self, port: int, addr: str = "127.0.0.1") -> int:
        """Expose /metrics on addr:port (0 picks a free port); returns the port."""
        from prometheus_client import start_http_server

        server, _thread = start_http_server(port, addr=addr, registry=self.registry)
        return server.server_address[1]


@dataclass
class StreamStats:
    records: int = 0
    replayed: int = 0
    skipped: int = 0  # tombstones, deletes, rows without a price
    undecodable: int = 0
    pushed: dict[str, int] = field(default_factory=lambda: {"firing": 0, "refresh": 0, "resolved": 0})


def ticker_observation(event) -> tuple[str, int, Decimal, Decimal | None] | None:
    """(symbol, event time ms, last price, quote volume) of a ticker_24h change, None if it has none."""
    if event.op not in _LIVE_OPS or not event.after:
        return None
    row = event.after
    symbol, moment, price = row.get("symbol"), row.get("event_time"), row.get("last_price")
    if not isinstance(symbol, str) or moment is None or not isinstance(price, Decimal) or price <= 0:
        return None
    volume = row.get("quote_volume")
    return symbol, int(moment.timestamp() * 1000), price, volume if isinstance(volume, Decimal) else None


class AlertStream:
    def __init__(self, *, kafka: KafkaSettings, topic: str, group: str, engine: PriceMoveEngine,
                 alertmanager: AlertmanagerClient, replay_margin_ms: int = 60_000,
                 emit: Callable[[str, AlertUpdate], None] = lambda state, update: None,
                 clock: Callable[[], float] = time.time, metrics: AlertMetrics | None = None):
        self.topic, self.group = topic, group
        self.engine, self.alertmanager = engine, alertmanager
        self.replay_margin_ms = replay_margin_ms
        self.emit, self.clock = emit, clock
        self.decoder = Decoder()
        self.stats = StreamStats()
        self.metrics = metrics or AlertMetrics()
        self.replay_until: dict[int, int] = {}
        self.kafka = kafka  # bootstrap and the user's client properties (security)
        self.consumer: Consumer | None = None
        self._stop = threading.Event()

    # -- start-up ---------------------------------------------------------------------------------
    def _connect(self):
        from cdc_consumer import kafka_clients

        consumer = self.consumer = kafka_clients.consumer(self.kafka, {
            "group.id": self.group, "enable.auto.commit": False,
            "auto.offset.reset": "latest", "enable.partition.eof": False,
            # Alertmanager outages are retried inside the loop; stay in the group meanwhile.
            "max.poll.interval.ms": 900_000, "topic.metadata.refresh.interval.ms": 5000,
            "partition.assignment.strategy": "range"})
        consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke)

    @property
    def _connected(self) -> Consumer:
        if self.consumer is None:
            raise RuntimeError("the alert stream is not connected (run() connects)")
        return self.consumer

    def adopt_active_alerts(self) -> int:
        """Adopt Alertmanager's active alerts of this source, so a restart never fires them again."""
        now = self._now_ms()
        alerts = self._retrying(lambda: self.alertmanager.active_alerts({"alertname": ALERT_NAME,
                                                                         SOURCE_LABEL[0]: SOURCE_LABEL[1]}))
        for alert in alerts:
            self.engine.adopt(alert["labels"], epoch_ms(alert["startsAt"]), epoch_ms(alert["endsAt"]), now)
        return len(alerts)

    def _on_assign(self, consumer, partitions) -> None:
        from confluent_kafka import OFFSET_END, TopicPartition

        self.engine.reset()
        since_ms = self._now_ms() - self.engine.max_window_ms - self.replay_margin_ms
        committed = {tp.partition: tp.offset for tp in consumer.committed(partitions, timeout=30)}
        by_time = {tp.partition: tp.offset for tp in consumer.offsets_for_times(
            [TopicPartition(self.topic, tp.partition, since_ms) for tp in partitions], timeout=30)}
        positions = []
        for tp in partitions:
            low, high = consumer.get_watermark_offsets(tp, timeout=30)
            done = committed[tp.partition] if committed[tp.partition] >= 0 else high
            start = by_time[tp.partition] if by_time[tp.partition] >= 0 else high
            start = max(low, min(start, done))
            self.replay_until[tp.partition] = done
            positions.append(TopicPartition(self.topic, tp.partition, start if start >= 0 else OFFSET_END))
            log.info("partition %d: replay offsets %d..%d into the windows, live from %d",
                     tp.partition, start, done, done)
        consumer.assign(positions)

    def _on_revoke(self, consumer, partitions) -> None:
        self.replay_until.clear()

    # -- main loop --------------------------------------------------------------------------------
    def run(self, stop: threading.Event, *, batch: int = 500) -> StreamStats:
        self._stop = stop
        self.adopt_active_alerts()
        self._connect()
        try:
            while not stop.is_set():
                self._step(self._next_batch(batch))
        finally:
            self._connected.close()
        return self.stats

    def _next_batch(self, size: int) -> list:
        """Wait (up to 0.2 s) for one record, then take what is already fetched: consume(n, timeout) alone
        would hold a lone record until n arrive or the timeout passes, adding up to 0.2 s to each alert."""
        first = self._connected.poll(0.2)
        if first is None:
            return []
        return [first, *self._connected.consume(size - 1, timeout=0)]

    def _step(self, messages) -> None:
        updates: list[AlertUpdate] = []
        ends: dict[int, int] = {}
        now = self._now_ms()
        for message in messages:
            if message.error() is not None:
                self._kafka_error(message.error())
                continue
            partition, offset = message.partition(), message.offset()
            replaying = offset < self.replay_until.get(partition, -1)
            produced = self._evaluate(message, now, "replayed" if replaying else "evaluated")
            if replaying:
                self.stats.replayed += 1
            else:
                updates.extend(produced)
                ends[partition] = offset + 1
        self.engine.expire(now)
        self.metrics.active.set(len(self.engine.active))
        if updates:
            started = time.perf_counter()
            self._retrying(lambda: self.alertmanager.push([u.to_api() for u in updates]))
            self.metrics.push_latency.observe(time.perf_counter() - started)
            for update in updates:
                self.stats.pushed[update.state] += 1
                self.metrics.pushed.labels(update.state).inc()
                self.emit(update.state, update)
        if ends:
            self._commit(ends)

    def _evaluate(self, message, now_ms: int, outcome: str) -> list[AlertUpdate]:
        self.stats.records += 1
        try:
            event = self.decoder.decode_record(RecordContext.of(message), message.value())
        except DecodeError as exc:
            self.stats.undecodable += 1
            self.metrics.records.labels("undecodable").inc()
            log.warning("%s[%d]@%d not evaluated: undecodable: %s", message.topic(), message.partition(),
                        message.offset(), exc)
            return []
        observation = ticker_observation(event)
        if observation is None:
            self.stats.skipped += 1
            self.metrics.records.labels("skipped").inc()
            return []
        self.metrics.records.labels(outcome).inc()
        return self.engine.observe(*observation, now_ms)

    def _commit(self, ends: dict[int, int]) -> None:
        from confluent_kafka import KafkaException, TopicPartition

        try:
            self._connected.commit(offsets=[TopicPartition(self.topic, p, o) for p, o in ends.items()],
                                 asynchronous=False)
        except KafkaException as exc:  # e.g. a rebalance took the partition: its new owner replays
            log.warning("offset commit failed (records will be re-evaluated after the rebalance): %s", exc)

    def _kafka_error(self, error) -> None:
        from confluent_kafka import KafkaException

        if error.fatal():
            raise KafkaException(error)
        log.warning("Kafka: %s", error.str())

    def _retrying(self, call: Callable):
        """Retry a transient Alertmanager failure with capped exponential backoff and jitter, forever:
        nothing is committed meanwhile, so no change event is skipped. A 4xx propagates (exit 1)."""
        delay = 0.2
        while True:
            try:
                return call()
            except AlertmanagerUnavailable as exc:
                self.metrics.push_failures.inc()
                if self._stop.is_set():
                    raise  # asked to stop: exit without committing what was not delivered
                log.warning("%s; retrying in %.1f s", exc, delay)
                self._stop.wait(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, 10.0)

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)
