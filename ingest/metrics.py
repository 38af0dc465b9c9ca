"""Prometheus metrics of `cdc poll` (prometheus-client, on a registry of its own like the consumer's).

The poller feeds them through two small hooks: `observe_cycle` after each cycle (its CycleReport) and
`observe_response` as a `requests` response hook on the Binance client's session, which sees every
HTTP answer including the 429/418 ones the client then waits out.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

RATE_LIMIT_STATUSES = (429, 418)


class PollerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.cycles = Counter("cdc_poller_cycles", "Poll cycles run", registry=r)
        self.rows_written = Counter("cdc_poller_rows_written", "Rows inserted, updated or deleted in PostgreSQL",
                                    ["table"], registry=r)
        self.weight_used = Gauge("cdc_poller_request_weight_used", "Binance request weight used in the current "
                                 "minute (X-MBX-USED-WEIGHT-1M, plus what was sent since)", registry=r)
        self.rate_limited = Counter("cdc_poller_rate_limited", "Binance answers 429 (rate limited) and 418 (IP ban)",
                                    ["status"], registry=r)
        self.failures = Counter("cdc_poller_failures", "Problems of a cycle: requests given up, malformed "
                                "payloads, rejected batches, rows lost on stop", registry=r)
        for status in RATE_LIMIT_STATUSES:  # both series exist from the start, at 0
            self.rate_limited.labels(str(status))

    def observe_cycle(self, report) -> None:
        """Account one finished cycle (ingest.poller.CycleReport)."""
        self.cycles.inc()
        for table, counts in report.counts.items():
            self.rows_written.labels(table).inc(counts.inserted + counts.updated + counts.deleted)
        self.weight_used.set(report.used_weight_1m)
        self.failures.inc(len(report.problems) + (1 if report.rows_lost else 0))

    def observe_response(self, response, *args, **kwargs):
        """`requests` response hook: count 429/418 answers; the response passes on unchanged."""
        if response.status_code in RATE_LIMIT_STATUSES:
            self.rate_limited.labels(str(response.status_code)).inc()
        return response

    def serve(self, port: int, addr: str = "127.0.0.1") -> None:
        """Expose /metrics on `addr:port` (a daemon thread)."""
        start_http_server(port, addr=addr, registry=self.registry)
