"""What the cluster tests measure and check beside the e2e helpers: stalls read from the consumers'
progress lines, node faults on a timeline, the DLQ topics' contents, `cdc status --json`."""

from __future__ import annotations

import json
import re
import threading
import time
from datetime import datetime
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from tests.e2e.pipeline import Pipeline, cdc
from tests.support import wait_until

_PROGRESS = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .*progress: .* applied (\d+),")


def applied_timeline(log_dir: Path) -> list[tuple[float, str, int]]:
    """(epoch seconds, consumer log, applied so far) of every progress line of every consumer."""
    points = []
    for log in sorted(log_dir.glob("consumer-*.log")):
        for line in log.read_text(errors="replace").splitlines():
            match = _PROGRESS.match(line)
            if match:
                stamp = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
                points.append((stamp, log.name, int(match.group(2))))
    return sorted(points)


def progress_moments(log_dir: Path) -> list[float]:
    """Epoch seconds of every progress line at which a consumer had applied more than at its previous one."""
    last: dict[str, int] = {}
    moments = []
    for stamp, log, applied in applied_timeline(log_dir):
        if applied > last.get(log, 0):
            moments.append(stamp)
        last[log] = applied
    return moments


def longest_stall(log_dir: Path, start: float, end: float) -> tuple[float, float]:
    """The longest time without an applied event within [start, end] (epoch seconds), the end capped at
    the last moment anything was applied (afterwards there is nothing left to apply): (seconds, since).
    Resolution: the consumers' progress interval (2 s)."""
    moments = progress_moments(log_dir)
    end = min(end, max(moments, default=end))
    points = [start, *(m for m in moments if start < m < end), end]
    return max(((b - a, a) for a, b in zip(points, points[1:], strict=False)), default=(0.0, start))


class Fault(threading.Thread):
    """SIGKILL a node now, start it again `down_for` seconds later; records when each happened."""

    def __init__(self, stack, node: str, down_for: float = 20.0) -> None:
        super().__init__(daemon=True)
        self.stack, self.node, self.down_for = stack, node, down_for
        self.killed_at = self.restarted_at = self.ready_at = 0.0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.stack.kill(self.node)
            self.killed_at = time.time()
            time.sleep(self.down_for)  # the outage's length is the scenario, not a synchronisation
            self.restarted_at = time.time()
            self.stack.start(self.node)
            self.ready_at = time.time()
        except BaseException as exc:  # noqa: BLE001 - reported by finish()
            self.error = exc

    def finish(self, timeout: float = 600) -> None:
        self.join(timeout)
        assert not self.is_alive(), f"{self.node} did not come back within {timeout}s"
        if self.error:
            raise self.error

    def describe(self) -> str:
        return (f"{self.node}: down {self.restarted_at - self.killed_at:.1f}s, "
                f"ready {self.ready_at - self.restarted_at:.1f}s after its restart")


def partition_leader(bootstrap: str, topic: str, partition: int = 0) -> int:
    metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=10)
    return metadata.topics[topic].partitions[partition].leader


def broker_node(broker_id: int) -> str:
    return "kafka" if broker_id == 1 else f"kafka-{broker_id}"


def dlq_records(bootstrap: str, pipeline: Pipeline) -> dict[str, int]:
    """Records in each DLQ topic of the pipeline (high - low watermark of every partition)."""
    metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "cluster-test-dlq-check"})
    try:
        counts = {}
        for topic, meta in metadata.topics.items():
            if topic.startswith(f"{pipeline.prefix}.") and topic.endswith(".dlq"):
                counts[topic] = sum(high - low for low, high in (
                    consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in meta.partitions))
        return counts
    finally:
        consumer.close()


def status(pipeline: Pipeline) -> tuple[int, dict]:
    result = cdc("status", "--json", "--connector", pipeline.name, "--group", pipeline.group,
                 "--cassandra-keyspace", pipeline.keyspace, timeout=120)
    return result.returncode, json.loads(result.stdout)


def verified(pipeline: Pipeline, timeout: float = 420) -> dict:
    """`Pipeline.wait_verified` (cdc verify, then the oracle) polled until it passes: right after a node is
    killed, a coordinator that has not yet convicted it may time a LOCAL_QUORUM read out (ReadTimeout)."""
    return wait_until(lambda: pipeline.wait_verified(timeout=120), timeout=timeout, interval=2,
                      what="cdc verify and the oracle to agree with PostgreSQL")
