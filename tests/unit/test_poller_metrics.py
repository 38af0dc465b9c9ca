"""`cdc poll` metrics: cycles, rows written per table, weight used, 429/418 answers and failures, as the
exposition text shows them after real poll cycles against the in-process simulated exchange (the
PostgreSQL edge is a recorder, as in test_binance_poller.py). Expected values are literals."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from ingest.binance import BinanceClient, ClientConfig
from ingest.metrics import PollerMetrics
from ingest.poller import PollConfig, Poller
from ingest.sim import SimControl, SimServer
from ingest.store import Batch, BatchRejected, TableCounts
from tests.unit.test_binance_poller import FakeClock


class CountingStore:
    """Reports 2 inserted tickers and 1 updated + 1 deleted order-book row per cycle."""

    def write(self, batch: Batch) -> dict[str, TableCounts]:
        return {"ticker_24h": TableCounts(inserted=2), "order_book": TableCounts(updated=1, deleted=1)}


@pytest.fixture()
def sim():
    with SimServer(symbols=5, seed=3, tick_s=0) as server:
        yield server


def poller_with_metrics(sim: SimServer, store) -> tuple[Poller, PollerMetrics]:
    clock = FakeClock()
    metrics = PollerMetrics()
    client = BinanceClient(ClientConfig(base_url=sim.url), clock=clock, sleep=clock.sleep)
    client.session.hooks["response"].append(metrics.observe_response)
    config = PollConfig(("BTCUSDT", "ETHUSDT"), kline_intervals=(), depth=5, trades=0)
    return Poller(config, client, store, metrics=metrics), metrics


def samples(metrics: PollerMetrics) -> dict[tuple[str, tuple], float]:
    text = generate_latest(metrics.registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples
            if not s.name.endswith("_created")}


def test_a_fresh_poller_exports_its_series_at_zero():
    values = samples(PollerMetrics())
    assert values[("cdc_poller_cycles_total", ())] == 0
    assert values[("cdc_poller_failures_total", ())] == 0
    assert values[("cdc_poller_rate_limited_total", (("status", "429"),))] == 0
    assert values[("cdc_poller_rate_limited_total", (("status", "418"),))] == 0


def test_cycles_rows_and_weight_are_counted(sim):
    poller, metrics = poller_with_metrics(sim, CountingStore())
    poller.run_cycle()
    poller.run_cycle()
    values = samples(metrics)
    assert values[("cdc_poller_cycles_total", ())] == 2
    assert values[("cdc_poller_rows_written_total", (("table", "ticker_24h"),))] == 4
    assert values[("cdc_poller_rows_written_total", (("table", "order_book"),))] == 4
    # Within one minute: (ticker 2 + depth 5 + depth 5) per cycle, as the simulator reports it.
    assert values[("cdc_poller_request_weight_used", ())] == 24
    assert values[("cdc_poller_failures_total", ())] == 0


def test_429_and_418_answers_and_failures_are_counted(sim):
    control = SimControl(sim.url)
    control.fault(status=429, count=2, path="/api/v3/ticker")
    control.fault(status=418, count=1, path="/api/v3/depth")
    control.fault(malformed=True, count=1, path="/api/v3/depth")
    poller, metrics = poller_with_metrics(sim, CountingStore())
    report = poller.run_cycle()
    values = samples(metrics)
    assert values[("cdc_poller_rate_limited_total", (("status", "429"),))] == 2
    assert values[("cdc_poller_rate_limited_total", (("status", "418"),))] == 1
    assert values[("cdc_poller_failures_total", ())] == len(report.problems) == 1  # the malformed depth


def test_a_rejected_batch_is_a_failure(sim):
    class RejectingStore:
        def write(self, batch):
            raise BatchRejected("PostgreSQL rejected the batch of 3 rows: NumericValueOutOfRange")

    poller, metrics = poller_with_metrics(sim, RejectingStore())
    poller.run_cycle()
    values = samples(metrics)
    assert values[("cdc_poller_failures_total", ())] == 1
    assert values[("cdc_poller_cycles_total", ())] == 1
    assert not any(name == "cdc_poller_rows_written_total" for name, _ in values)
