"""Poll-cycle logic (scheduling within the weight budget, failure isolation, resumption, stopping) against
the in-process simulated exchange. The PostgreSQL edge is replaced by a recorder here; the real writes are
covered by tests/integration/test_poller_pg.py."""

from __future__ import annotations

import threading

import pytest

from ingest.binance import BinanceClient, ClientConfig
from ingest.poller import PollConfig, Poller, Scheduler, Task
from ingest.sim import SimControl, SimServer
from ingest.store import Batch, BatchRejected, TableCounts


class RecordingStore:
    def __init__(self):
        self.batches: list[Batch] = []

    def write(self, batch: Batch) -> dict[str, TableCounts]:
        self.batches.append(batch)
        return {"ticker_24h": TableCounts(len(batch.tickers))}


class FakeClock:
    def __init__(self):
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture()
def sim():
    with SimServer(symbols=120, seed=5, tick_s=0) as server:
        yield server


def make_poller(sim: SimServer, symbols, stop=None, **config) -> tuple[Poller, RecordingStore, FakeClock]:
    clock = FakeClock()
    client = BinanceClient(ClientConfig(base_url=sim.url, weight_budget=config.get("weight_budget", 5000)),
                           clock=clock, sleep=clock.sleep)
    store = RecordingStore()
    return Poller(PollConfig(tuple(symbols), **config), client, store, stop=stop), store, clock


def test_scheduler_takes_tasks_in_order_while_they_fit_and_rotates():
    scheduler = Scheduler(PollConfig(("A", "B"), kline_intervals=("1m",), depth=5, trades=10))
    assert [str(t) for t in scheduler.plan(14)] == ["klines A 1m", "klines B 1m", "depth A", "depth B"]
    assert [str(t) for t in scheduler.plan(14)] == ["trades A"]  # always at least one task
    assert [str(t) for t in scheduler.plan(100)] == ["trades B", "klines A 1m", "klines B 1m", "depth A",
                                                     "depth B", "trades A"]


def test_scheduler_never_lets_cheap_tasks_overtake_an_expensive_one():
    scheduler = Scheduler(PollConfig(("A",), kline_intervals=("1m",), depth=0, trades=10))
    scheduler.queue.rotate(-1)  # trades first
    assert scheduler.plan(10) == [Task("trades", "A", 25)]


def test_one_hundred_symbols_every_10_s_stay_within_the_minute_budget(sim):
    symbols = [f"SYM{i:03d}USDT" for i in range(1, 101)]
    poller, store, _ = make_poller(sim, symbols, interval_s=10, depth=20, trades=100, weight_budget=5000)
    reports = [poller.run_cycle() for _ in range(6)]  # one minute of 10 s cycles
    assert sum(r.weight for r in reports) <= 5000 + 25  # the first task of a cycle may overshoot by one
    assert all(len(b.tickers) == 100 for b in store.batches)  # every cycle: all tickers in one call
    assert {k.symbol for b in store.batches for k in b.klines} == set(symbols)
    assert SimControl(sim.url).requests_received()[0]["path"] == "/api/v3/ticker/24hr"


def test_an_invalid_symbol_is_named_dropped_and_the_others_carry_on(sim):
    poller, store, _ = make_poller(sim, ["BTCUSDT", "FOOUSDT", "ETHUSDT"], depth=5, trades=0)
    report = poller.run_cycle()
    assert any("FOOUSDT" in p and "invalid" in p for p in report.problems)
    assert {t.symbol for t in store.batches[0].tickers} == {"BTCUSDT", "ETHUSDT"}
    assert poller.invalid == ["FOOUSDT"]
    poller.run_cycle()
    assert all("FOOUSDT" not in r["query"] for r in SimControl(sim.url).requests_received()[-3:])


def test_a_malformed_response_skips_only_that_request(sim):
    SimControl(sim.url).fault(malformed=True, count=1, path="/api/v3/depth")
    poller, store, _ = make_poller(sim, ["BTCUSDT", "ETHUSDT"], depth=5, trades=0)
    report = poller.run_cycle()
    assert any("depth BTCUSDT" in p and "not JSON" in p for p in report.problems)
    assert {lv.symbol for lv in store.batches[0].depth} == {"ETHUSDT"}
    assert len(store.batches[0].tickers) == 2


def test_later_cycles_fetch_only_new_trades_and_resume_klines_from_the_open_one(sim):
    control = SimControl(sim.url)
    poller, store, _ = make_poller(sim, ["BTCUSDT"], depth=0, trades=50, backfill=5)
    poller.run_cycle()
    control.step(symbols=["BTCUSDT"], steps=90)  # 1.5 minutes of trading
    poller.run_cycle()
    first, second = store.batches
    assert min(t.trade_id for t in second.trades) > max(t.trade_id for t in first.trades)
    assert second.klines[0].open_time == first.klines[-1].open_time  # the formerly open kline, now final
    assert len(second.klines) >= 2


def test_a_stop_request_ends_the_fetch_early_but_what_was_fetched_is_written(sim):
    stop = threading.Event()
    poller, store, _ = make_poller(sim, ["BTCUSDT", "ETHUSDT"], stop=stop, depth=5, trades=10)
    stop.set()
    report = poller.run_cycle()
    assert report.interrupted
    assert len(store.batches) == 1 and len(store.batches[0].tickers) == 2
    assert poller.run() == 0


def test_the_depth_of_each_side_received_is_recorded_for_trimming(sim):
    poller, store, _ = make_poller(sim, ["BTCUSDT"], depth=7, trades=0)
    poller.run_cycle()
    assert store.batches[0].book_depths == {("BTCUSDT", "bid"): 7, ("BTCUSDT", "ask"): 7}


def test_a_batch_postgres_rejects_is_reported_and_the_poller_goes_on(sim):
    class RejectingStore(RecordingStore):
        def write(self, batch):
            raise BatchRejected("PostgreSQL rejected the batch of 3 rows: NumericValueOutOfRange")

    poller, _, _ = make_poller(sim, ["BTCUSDT"], depth=0, trades=0)
    poller.store = RejectingStore()
    report = poller.run_cycle()
    assert any("NumericValueOutOfRange" in p for p in report.problems)
    assert report.rows_lost == 0 and poller.kline_resume == {}  # nothing remembered as written


def test_poll_config_rejects_an_empty_symbol_list():
    with pytest.raises(ValueError, match="no symbols"):
        PollConfig(())
