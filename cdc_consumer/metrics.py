"""Prometheus metrics of `cdc consume` (prometheus-client), on their own registry.

A private registry (not the process-global one) lets several consumers run in one process (tests,
benchmarks) and keeps the exposition to exactly these series.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    start_http_server,
)

# Write and lag latencies of a low-latency pipeline: 1 ms .. 60 s.
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Quantile estimate from cumulative (upper bound, count) buckets, interpolated inside the bucket that
    holds it, as PromQL's histogram_quantile (observations past the last finite bound report that bound)."""
    buckets = sorted(buckets)
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return lower_bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / max(count - lower_count, 1e-9)
        lower_bound, lower_count = bound, count
    return lower_bound


STAGE_SAMPLE = 8  # 1 record in 8 feeds the latency split histograms

PAUSE_REASONS = ("cassandra_unavailable", "registry_unavailable", "kafka_unavailable")


class ConsumerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.consumed = Counter("cdc_events_consumed", "Kafka records consumed", ["topic"], registry=r)
        self.applied = Counter("cdc_events_applied", "Change events whose Cassandra writes were acknowledged",
                               ["topic", "table"], registry=r)
        self.skipped = Counter("cdc_events_skipped", "Records deliberately not written "
                               "(tombstone, transaction marker, truncate, skipped table)",
                               ["topic", "reason"], registry=r)
        self.dlq = Counter("cdc_events_dlq", "Records sent to the dead-letter topic", ["topic", "error_type"],
                           registry=r)
        self.rows_written = Counter("cdc_rows_written", "Cassandra row operations acknowledged",
                                    ["table", "operation"], registry=r)
        self.write_retries = Counter("cdc_write_retries", "Cassandra requests retried after an error",
                                     ["error"], registry=r)
        self.batch_latency = Histogram("cdc_batch_write_seconds", "Latency of one Cassandra write request "
                                       "(a single-partition UNLOGGED batch or a single statement)",
                                       buckets=_LATENCY_BUCKETS, registry=r)
        self.end_to_end_lag = Histogram("cdc_end_to_end_lag_seconds", "Now minus the source commit time "
                                        "when a change is applied to Cassandra", buckets=_LATENCY_BUCKETS,
                                        registry=r)
        # The latency split (commit -> Kafka -> Cassandra), on the records whose offset is a multiple of
        # STAGE_SAMPLE: two more observations per record would cost the hot path ~2 us each.
        self.commit_to_kafka = Histogram("cdc_commit_to_kafka_seconds", "Kafka record time (CreateTime, set by "
                                         "Connect's producer) minus the source commit time; records whose offset "
                                         f"is a multiple of {STAGE_SAMPLE}", buckets=_LATENCY_BUCKETS, registry=r)
        self.kafka_to_cassandra = Histogram("cdc_kafka_to_cassandra_seconds", "Now minus the Kafka record time "
                                            "(CreateTime) when a change is applied to Cassandra; records whose "
                                            f"offset is a multiple of {STAGE_SAMPLE}", buckets=_LATENCY_BUCKETS,
                                            registry=r)
        self.consumer_lag = Gauge("cdc_consumer_lag", "High watermark minus committed position",
                                  ["topic", "partition"], registry=r)
        self.paused = Gauge("cdc_consumer_paused", "1 while consumption waits for this reason (cassandra_unavailable, "
                            "registry_unavailable, kafka_unavailable), else 0", ["reason"], registry=r)
        self.columns_ignored = Gauge("cdc_source_columns_ignored", "Source columns seen in change events that "
                                     "the mapping does not write (no schema_evolution: add_columns)", ["table"],
                                     registry=r)
        for reason in PAUSE_REASONS:  # the series exist (at 0) before the first pause
            self.paused.labels(reason).set(0)
        self.in_flight = Gauge("cdc_writes_in_flight", "Cassandra requests awaiting acknowledgement",
                               registry=r)

    def serve(self, port: int, addr: str = "127.0.0.1") -> None:
        """Expose /metrics on `addr:port` (a daemon thread)."""
        start_http_server(port, addr=addr, registry=self.registry)
