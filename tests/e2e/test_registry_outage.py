"""The schema registry unreachable for 30 s in the middle of an Avro stream, end to end (issue 14).

The registry keeps its schemas in memory, so it is not restarted (ids would be reissued): the consumer
reaches it through a TCP proxy the test cuts, while Debezium keeps registering through the direct path.
An ADD COLUMN during the cut makes Debezium register a new schema version, so the consumer must fetch an
id it has never cached while the registry is away. Expected: it pauses with reason registry_unavailable,
sends nothing to a DLQ, and converges once the registry is reachable again (cdc verify + tests/oracle.py).
"""

from __future__ import annotations

import re
import time
import urllib.request
from urllib.parse import urlparse

import psycopg
import pytest
from confluent_kafka.admin import AdminClient

from tests.e2e.pipeline import ChangeStream, Pipeline
from tests.e2e.test_schema_changes import free_port, metric
from tests.integration.consume_support import high_watermarks
from tests.integration.tcp_proxy import TcpProxy
from tests.support import wait_until

pytestmark = pytest.mark.e2e

OUTAGE_S = 30
PAUSED = 'reason="registry_unavailable"'


def dlq_records(bootstrap: str, pipeline: Pipeline) -> int:
    """Records in the pipeline's dead-letter topics, by their high watermarks (a topic never created holds none)."""
    existing = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics
    dlqs = [f"{pipeline.topic(t)}.dlq" for t in ("ticker_24h", "klines", "order_book", "trades")]
    return sum(sum(high_watermarks(bootstrap, t).values()) for t in dlqs if t in existing)


def applied(port: int) -> float:
    """Change events the consumer has written to Cassandra, over every topic and table."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith("cdc_events_applied_total{"))


@pytest.mark.parametrize("pipeline", ["avro"], indirect=True)
def test_registry_unreachable_for_30s_mid_avro_stream_pauses_without_dlq_and_converges(
        pipeline: Pipeline, registry_url, kafka_bootstrap):
    upstream = urlparse(registry_url)
    proxy = TcpProxy((upstream.hostname, upstream.port)).start()
    proxied_url = upstream._replace(netloc=f"127.0.0.1:{proxy.port}").geturl()
    port = free_port()
    consumer = pipeline.start_consumer("--registry", proxied_url, "--metrics-port", str(port))
    changes = ChangeStream(pipeline.dsn, total=10_000, rate=250)  # ~40 s: it flows before, during and after the cut
    changes.start()
    wait_until(lambda: applied(port) > 0, timeout=120, what="the consumer to apply Avro records (schemas cached)")

    proxy.cut()
    outage_end = time.monotonic() + OUTAGE_S
    try:
        with psycopg.connect(pipeline.dsn, autocommit=True) as conn:
            conn.execute("ALTER TABLE klines ADD COLUMN venue text")  # a schema id the consumer has never seen
        wait_until(lambda: metric(port, "cdc_consumer_paused", PAUSED) == 1, timeout=OUTAGE_S - 5,
                   what="cdc_consumer_paused{reason=registry_unavailable} = 1")
        while time.monotonic() < outage_end:  # the outage lasts 30 s: the consumer retries, parks nothing
            assert consumer.poll() is None, "consumer died while the registry was unreachable"
            assert dlq_records(kafka_bootstrap, pipeline) == 0, "a record went to a DLQ during the outage"
            time.sleep(1)  # the fault's duration, not synchronisation
    finally:
        proxy.start()  # the same port again: the registry is reachable for the consumer

    assert changes.wait() >= 10_000
    pipeline.wait_verified()
    wait_until(lambda: metric(port, "cdc_consumer_paused", PAUSED) == 0, timeout=30, what="the pause to end")
    assert dlq_records(kafka_bootstrap, pipeline) == 0
    assert consumer.poll() is None, "consumer exited"
    log = (pipeline.log_dir / "consumer-0.log").read_text()
    paused = (r"paused \(registry_unavailable\): registry: RegistryUnavailable: \S+@\d+: "
              rf"schema registry {re.escape(proxied_url)} unreachable")
    assert re.search(paused, log), log[-3000:]
    # The held record was retried during the outage and waited again each time (backoff), never parked.
    assert len(re.findall(r"waits [\d.]+s \(attempt \d+\)", log)) >= 3, log[-3000:]
