"""Issue 13 on a real 3 + 3 cluster: a 20,000-change stream through Debezium while a Cassandra node, the
Kafka broker leading a ticker partition and the consumer are each SIGKILLed; nothing is lost."""

from __future__ import annotations

import os
import sys
import time

import pytest

from tests.cluster.support import Fault, broker_node, dlq_records, longest_stall, partition_leader, verified
from tests.e2e.pipeline import ChangeStream
from tests.support import wait_until

# Two node restarts on two shared cores: minutes under load, so more than the suite's 600 s per test.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]


def test_twenty_thousand_changes_survive_node_and_consumer_kills(cluster_stack, cluster_pipeline):
    p = cluster_pipeline
    bootstrap = os.environ["CDC_KAFKA_BOOTSTRAP"]
    p.start_consumer()
    stream = ChangeStream(p.dsn, total=20_000, rate=400)
    started = time.time()
    stream.start()
    faults = []
    try:
        wait_until(lambda: stream.written >= 2_000, timeout=120, what="2,000 changes written")
        faults.append(Fault(cluster_stack, "cassandra-2"))
        faults[-1].start()

        wait_until(lambda: stream.written >= 5_000, timeout=120, what="5,000 changes written")
        leader = wait_until(lambda: partition_leader(bootstrap, p.topic("ticker_24h")), timeout=60,
                            what="a leader of the ticker topic's partition 0")
        faults.append(Fault(cluster_stack, broker_node(leader)))
        faults[-1].start()

        wait_until(lambda: stream.written >= 8_000, timeout=120, what="8,000 changes written")
        p.kill(p.consumers[0])
        consumer_killed = time.time()
        p.start_consumer()

        written = stream.wait(timeout=600)
    finally:
        for fault in faults:
            fault.finish()
    assert written >= 20_000
    verified(p, timeout=600)  # cdc verify identical, then the independent oracle
    converged = time.time()
    dlq = dlq_records(bootstrap, p)
    assert all(count == 0 for count in dlq.values()), dlq

    print(f"\n{written} changes; verified identical {converged - started:.0f}s after the stream began",
          file=sys.stderr)
    for fault in faults:
        stall, since = longest_stall(p.log_dir, fault.killed_at, fault.ready_at + 30)
        print(f"  {fault.describe()}; killed at +{fault.killed_at - started:.0f}s; longest stall in applied "
              f"events from the kill until 30 s after it was back: {stall:.1f}s (from +{since - started:.0f}s)",
              file=sys.stderr)
    stall, since = longest_stall(p.log_dir, consumer_killed, consumer_killed + 60)
    print(f"  consumer SIGKILLed at +{consumer_killed - started:.0f}s: longest stall within 60 s: {stall:.1f}s",
          file=sys.stderr)
    stall, since = longest_stall(p.log_dir, started, converged)
    print(f"  longest stall in applied events over the whole run: {stall:.1f}s from +{since - started:.0f}s",
          file=sys.stderr)
