"""Dead-letter queue: records that cannot be decoded or mapped, republished unchanged with error headers.

The original key, value and headers are kept byte for byte; these headers are added:
`cdc.error` (the reason), `cdc.error.type`, `cdc.original.topic`, `cdc.original.partition`,
`cdc.original.offset`. A record's token is released only once the broker acknowledged its DLQ copy
(acks=all, idempotent producer), so the consumer never commits past a bad record it has not parked.
A failed delivery is produced again after a backoff, never dropped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import NewTopic

from cdc_consumer import kafka_clients
from cdc_consumer.config import KafkaSettings

log = logging.getLogger(__name__)

DEFAULT_TOPIC_TEMPLATE = "{topic}.dlq"
ERROR_HEADERS = ("cdc.error", "cdc.error.type", "cdc.original.topic", "cdc.original.partition",
                 "cdc.original.offset")


def dlq_topic(template: str, topic: str) -> str:
    """The DLQ topic of `topic` from a template using `{topic}` (e.g. `{topic}.dlq`, `dlq.{topic}`)."""
    if "{topic}" not in template:
        raise ValueError(f"DLQ topic template {template!r} must contain {{topic}}")
    return template.replace("{topic}", topic)


@dataclass(eq=False)
class _Parked:
    token: Hashable
    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    attempts: int = 0
    retry_at: float = 0.0


class DeadLetterQueue:
    def __init__(self, bootstrap: str, *, topic_template: str = DEFAULT_TOPIC_TEMPLATE,
                 create_topics: bool = True, retry_max: float = 5.0, extra_config: dict | None = None,
                 kafka: KafkaSettings | None = None) -> None:
        dlq_topic(topic_template, "x")  # validate the template up front
        self.topic_template = topic_template
        self.create_topics = create_topics
        self.retry_max = retry_max
        kafka = kafka or KafkaSettings(bootstrap)  # the user's client properties (security) on every client
        config = {"acks": "all", "enable.idempotence": True, "linger.ms": 5, **(extra_config or {})}
        self._producer = kafka_clients.producer(kafka, config)
        self._admin = kafka_clients.admin(kafka) if create_topics else None
        self._known_topics: set[str] = set()
        self._delivered: list[Hashable] = []
        self._retry: list[_Parked] = []
        self.pending = 0
        self.sent = 0

    def send(self, token: Hashable, *, topic: str, partition: int, offset: int, key: bytes | None,
             value: bytes | None, headers: list[tuple[str, bytes]] | None, error_type: str, reason: str) -> str:
        """Park one record; its token comes back from poll() once the DLQ copy is acknowledged."""
        target = dlq_topic(self.topic_template, topic)
        self._ensure_topic(target)
        error_headers = [
            ("cdc.error", reason.encode("utf-8", "replace")),
            ("cdc.error.type", error_type.encode()),
            ("cdc.original.topic", topic.encode()),
            ("cdc.original.partition", str(partition).encode()),
            ("cdc.original.offset", str(offset).encode()),
        ]
        parked = _Parked(token, target, key, value, [*(headers or []), *error_headers])
        self.pending += 1
        self._produce(parked)
        return target

    def poll(self, timeout: float = 0.0) -> list[Hashable]:
        """Serve delivery reports and due retries; return tokens whose DLQ copy is acknowledged."""
        self._producer.poll(timeout)
        now = time.monotonic()
        for parked in [p for p in self._retry if p.retry_at <= now]:
            self._retry.remove(parked)
            self._produce(parked)
        delivered, self._delivered = self._delivered, []
        return delivered

    def flush(self, timeout: float) -> bool:
        """Wait until every parked record is acknowledged (True) or the deadline passes."""
        deadline = time.monotonic() + timeout
        while self.pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._producer.flush(min(remaining, 0.1))
            self.poll(0)
        return True

    def close(self, timeout: float = 10.0) -> bool:
        return self.flush(timeout)

    def _produce(self, parked: _Parked) -> None:
        parked.attempts += 1
        while True:
            try:
                self._producer.produce(parked.topic, value=parked.value, key=parked.key, headers=parked.headers,
                                       on_delivery=lambda err, msg, p=parked: self._on_delivery(err, p))
                return
            except BufferError:  # local queue full: serve deliveries, then try again
                self._producer.poll(0.1)

    def _on_delivery(self, error: KafkaError | None, parked: _Parked) -> None:
        if error is None:
            self.pending -= 1
            self.sent += 1
            self._delivered.append(parked.token)
            return
        delay = min(self.retry_max, 0.2 * 2 ** (parked.attempts - 1))
        log.warning("DLQ delivery to %s failed (attempt %d, retry in %.1fs): %s", parked.topic, parked.attempts,
                    delay, error)
        parked.retry_at = time.monotonic() + delay
        self._retry.append(parked)

    def _ensure_topic(self, topic: str) -> None:
        """Create the DLQ topic once if missing (brokers may not auto-create topics)."""
        if self._admin is None or topic in self._known_topics:
            return
        futures = self._admin.create_topics([NewTopic(topic, num_partitions=1)], operation_timeout=10)
        try:
            futures[topic].result(timeout=15)
            log.info("created DLQ topic %s", topic)
        except KafkaException as exc:
            error: Any = exc.args[0] if exc.args else None
            if getattr(error, "code", lambda: None)() != KafkaError.TOPIC_ALREADY_EXISTS:
                log.warning("could not create DLQ topic %s (producing anyway): %s", topic, exc)
        self._known_topics.add(topic)
