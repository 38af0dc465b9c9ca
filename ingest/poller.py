"""The poll cycle: fetch from Binance within the weight budget, write to PostgreSQL, log one summary line.

Per cycle: one multi-symbol 24h-ticker call, then per-symbol klines/depth/trades requests taken in
round-robin order from a queue while they fit the cycle's share of the weight budget
(budget/min x interval/60), so 100+ symbols at 10 s stay under Binance's 6000/min and every symbol is
refreshed in turn. Klines resume from the last open kline seen, so a symbol visited every few cycles
still gets every kline and the final values of the one that was open.

A request that fails (invalid symbol, malformed payload, retries exhausted) is reported in the summary
and the others carry on; a symbol Binance calls invalid is dropped from later cycles. One bad item of a
response (a field its column cannot hold, a non-numeric value, a timestamp out of range) is rejected and
named (item, symbol, field, reason) and counted in `items_rejected`; the rest of the cycle is written.
A stop request (SIGTERM/Ctrl-C) ends the current fetch early, the fetched rows are still written, and the
loop exits.

Exit status of `run`: 1 when PostgreSQL refused the writes of `max_failed_writes` consecutive cycles (a
permanent error such as an unknown column: retrying cannot help, so the process stops with a message
instead of dropping every cycle forever), when a stop came while PostgreSQL was unreachable, when no
valid symbol is left, and with `once` when the cycle fetched or wrote nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from ingest.binance import (
    KLINES_WEIGHT,
    TRADES_WEIGHT,
    BinanceClient,
    BinanceError,
    InvalidSymbol,
    depth_weight,
    ticker_weight,
)
from ingest.models import MalformedPayload
from ingest.store import Batch, BatchRejected, Store, TableCounts

log = logging.getLogger(__name__)


class Interrupted(Exception):
    """Raised by a stop-aware sleep once a stop was requested."""


def stop_aware_sleep(stop: threading.Event) -> Callable[[float], None]:
    """A sleep that returns early, raising Interrupted, when `stop` is set."""
    def sleep(seconds: float) -> None:
        if stop.wait(max(0.0, seconds)):
            raise Interrupted()
    return sleep


@dataclass(frozen=True)
class PollConfig:
    symbols: tuple[str, ...]
    interval_s: float = 10.0
    kline_intervals: tuple[str, ...] = ("1m",)
    depth: int = 20  # levels per side; 0 = no order book
    trades: int = 100  # recent trades per request; 0 = no trades
    backfill: int = 60  # klines fetched per symbol and interval the first time
    weight_budget: int = 5000  # per minute
    max_failed_writes: int = 3  # consecutive cycles whose write PostgreSQL refused before the poller stops

    def __post_init__(self) -> None:
        if not self.symbols:
            raise ValueError("no symbols to poll")
        if self.interval_s <= 0:
            raise ValueError(f"interval {self.interval_s} s must be positive")


@dataclass(frozen=True)
class Task:
    """One per-symbol request."""

    kind: str  # "klines" | "depth" | "trades"
    symbol: str
    weight: int
    interval: str = ""

    def __str__(self) -> str:
        return f"{self.kind} {self.symbol}" + (f" {self.interval}" if self.interval else "")


class Scheduler:
    """Round-robin queue of per-symbol tasks; each cycle takes tasks from the front while they fit."""

    def __init__(self, config: PollConfig):
        tasks = [Task("klines", s, KLINES_WEIGHT, i) for s in config.symbols for i in config.kline_intervals]
        if config.depth:
            tasks += [Task("depth", s, depth_weight(config.depth)) for s in config.symbols]
        if config.trades:
            tasks += [Task("trades", s, TRADES_WEIGHT) for s in config.symbols]
        self.queue: deque[Task] = deque(tasks)
        self.round_weight = sum(t.weight for t in tasks)

    def plan(self, allowance: float) -> list[Task]:
        """Tasks for this cycle: at least one, then while the allowance lasts (strict order, so none starves)."""
        chosen: list[Task] = []
        for _ in range(len(self.queue)):
            task = self.queue[0]
            if chosen and task.weight > allowance:
                break
            self.queue.rotate(-1)
            chosen.append(task)
            allowance -= task.weight
        return chosen

    def drop_symbol(self, symbol: str) -> None:
        self.queue = deque(t for t in self.queue if t.symbol != symbol)
        self.round_weight = sum(t.weight for t in self.queue)


@dataclass
class CycleReport:
    number: int
    counts: dict[str, TableCounts] = field(default_factory=dict)
    weight: int = 0
    used_weight_1m: int = 0
    fetch_s: float = 0.0
    write_s: float = 0.0
    problems: list[str] = field(default_factory=list)
    rows_fetched: int = 0
    rows_lost: int = 0  # fetched but not written (stopped while PostgreSQL was unreachable)
    interrupted: bool = False
    items_rejected: int = 0  # bad items skipped: malformed in the response, or refused by PostgreSQL
    write_error: str = ""  # why PostgreSQL refused the whole write (a permanent error), if it did

    def summary(self) -> str:
        tables = ", ".join(f"{name} {counts}" for name, counts in self.counts.items())
        return (f"cycle {self.number}: {tables or 'nothing written'}; weight {self.weight} "
                f"(used {self.used_weight_1m}/min); fetch {self.fetch_s:.2f} s, write {self.write_s:.3f} s, "
                f"cycle {self.fetch_s + self.write_s:.2f} s; {len(self.problems)} problem(s), "
                f"{self.items_rejected} item(s) rejected")

    @property
    def rows_written(self) -> int:
        return sum(c.inserted + c.updated + c.deleted for c in self.counts.values())

    @property
    def write_failed(self) -> bool:
        """PostgreSQL refused the write, or every row it was given."""
        refused_all = self.rows_fetched and self.rows_written == 0 and \
            sum(c.rejected for c in self.counts.values()) >= self.rows_fetched
        return bool(self.write_error or refused_all)

    @property
    def failed(self) -> bool:
        """Nothing could be fetched (every request failed) or written."""
        return (self.rows_fetched == 0 and bool(self.problems)) or self.write_failed or bool(self.rows_lost)


class Poller:
    def __init__(self, config: PollConfig, client: BinanceClient, store: Store, *,
                 stop: threading.Event | None = None, clock: Callable[[], float] = time.monotonic,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC), metrics=None):
        self.config = config
        self.metrics = metrics  # ingest.metrics.PollerMetrics or None
        self.client = client
        self.store = store
        self.stop = stop or threading.Event()
        self._clock = clock
        self._now = now
        self.scheduler = Scheduler(config)
        self.symbols = list(config.symbols)
        self.invalid: list[str] = []
        self.cycles = 0
        self.items_rejected = 0  # bad items skipped since start
        self.failed_writes = 0  # consecutive cycles whose write PostgreSQL refused
        # (symbol, interval) -> open time of the newest kline stored; (symbol) -> newest trade id stored
        self.kline_resume: dict[tuple[str, str], datetime] = {}
        self.last_trade_id: dict[str, int] = {}
        self._warn_if_slow_rotation()

    def run(self, once: bool = False) -> int:
        """Cycle until stopped (or once); returns the process exit status."""
        while not self.stop.is_set():
            started = self._clock()
            report = self.run_cycle()
            if report.rows_lost or not self.symbols or self._too_many_failed_writes(report):
                return 1
            if once:
                return self._once_status(report)
            if self.stop.wait(max(0.0, self.config.interval_s - (self._clock() - started))):
                break
        log.info("poller stopped after %d cycle(s)", self.cycles)
        return 0

    def run_cycle(self) -> CycleReport:
        self.cycles += 1
        report = CycleReport(self.cycles)
        weight_before = self.client.weight_sent
        started = self._clock()
        batch = self.fetch(report)
        report.fetch_s = self._clock() - started
        report.weight = self.client.weight_sent - weight_before
        report.used_weight_1m = self.client.limiter.used
        report.rows_fetched = len(batch)
        written = self._clock()
        try:
            report.counts = self.store.write(batch)
            report.items_rejected += sum(c.rejected for c in report.counts.values())
            self._remember(batch)
        except BatchRejected as exc:
            report.write_error = str(exc)
            report.problems.append(f"{exc}; this cycle's rows are dropped")
        except Interrupted:
            report.rows_lost = len(batch)
            log.error("stopped while PostgreSQL was unreachable: %d fetched rows of cycle %d were not written",
                      len(batch), report.number)
        report.write_s = self._clock() - written
        self.items_rejected += report.items_rejected
        for problem in report.problems:
            log.warning("cycle %d: %s", report.number, problem)
        log.info(report.summary())
        if self.metrics is not None:
            self.metrics.observe_cycle(report)
        return report

    # -- fetching -----------------------------------------------------------------------------------------

    def fetch(self, report: CycleReport) -> Batch:
        batch = Batch()
        try:
            self._fetch_tickers(batch, report)
            allowance = self.config.weight_budget * self.config.interval_s / 60 - ticker_weight(len(self.symbols))
            for task in self.scheduler.plan(allowance):
                if self.stop.is_set():
                    raise Interrupted()
                self._run_task(task, batch, report)
        except Interrupted:
            report.interrupted = True
            log.info("stop requested: ending cycle %d early, writing what was fetched", report.number)
        return batch

    def _fetch_tickers(self, batch: Batch, report: CycleReport) -> None:
        try:
            result = self.client.tickers(self.symbols)
        except (BinanceError, MalformedPayload) as exc:
            report.problems.append(f"tickers: {exc}")
            return
        batch.tickers.extend(result.tickers)
        self._reject_items(result.problems, report)
        for symbol in result.invalid:
            self._drop(symbol, report, "the ticker call")

    def _run_task(self, task: Task, batch: Batch, report: CycleReport) -> None:
        try:
            if task.kind == "klines":
                start = self.kline_resume.get((task.symbol, task.interval))
                klines, problems = self.client.klines(task.symbol, task.interval, start=start,
                                                      limit=1000 if start else self.config.backfill)
                batch.klines.extend(klines)
                self._reject_items(problems, report)
            elif task.kind == "depth":
                levels = self.client.depth(task.symbol, self.config.depth, self._now())
                batch.depth.extend(levels)
                for side in ("bid", "ask"):
                    batch.book_depths[(task.symbol, side)] = sum(1 for lv in levels if lv.side == side)
            else:
                trades, problems = self.client.trades(task.symbol, self.config.trades)
                newest = self.last_trade_id.get(task.symbol, -1)
                batch.trades.extend(t for t in trades if t.trade_id > newest)
                self._reject_items(problems, report)
        except InvalidSymbol:
            self._drop(task.symbol, report, str(task))
        except MalformedPayload as exc:  # a depth snapshot is one item: a book with a hole would be wrong
            self._reject_items([str(exc)], report)
        except BinanceError as exc:
            report.problems.append(f"{task}: {exc}")

    # -- bad items and failed cycles (kept apart so metrics can hook in) ------------------------------------

    @staticmethod
    def _reject_items(reasons: list[str], report: CycleReport) -> None:
        """Items of a response the models refused: each names its item, symbol, field and reason."""
        report.items_rejected += len(reasons)
        report.problems.extend(f"rejected {reason}" for reason in reasons)

    def _too_many_failed_writes(self, report: CycleReport) -> bool:
        """Count consecutive cycles PostgreSQL refused; True (after logging why) once they reach the limit."""
        self.failed_writes = self.failed_writes + 1 if report.write_failed else 0
        if self.failed_writes < self.config.max_failed_writes:
            return False
        log.error("PostgreSQL refused the writes of %d consecutive cycles; stopping, because retrying cannot "
                  "help (last: %s). Fix the cause (e.g. `cdc init` for a missing table or column) and restart.",
                  self.failed_writes, report.write_error or "every row was rejected")
        return True

    @staticmethod
    def _once_status(report: CycleReport) -> int:
        if not report.failed:
            return 0
        log.error("cycle %d %s", report.number,
                  "wrote nothing: PostgreSQL refused it" if report.write_failed
                  else "fetched nothing: every request failed" if report.rows_fetched == 0
                  else "was not written")
        return 1

    def _drop(self, symbol: str, report: CycleReport, where: str) -> None:
        if symbol in self.symbols:
            self.symbols.remove(symbol)
            self.invalid.append(symbol)
            self.scheduler.drop_symbol(symbol)
            report.problems.append(f"Binance says symbol {symbol} is invalid ({where}); "
                                   f"dropped, polling {len(self.symbols)} symbol(s) on")
            if not self.symbols:
                log.error("no valid symbols left to poll")
                self.stop.set()

    def _remember(self, batch: Batch) -> None:
        """After a commit: where the next kline/trade requests resume."""
        for kline in batch.klines:
            key = (kline.symbol, kline.interval)
            if key not in self.kline_resume or kline.open_time > self.kline_resume[key]:
                self.kline_resume[key] = kline.open_time
        for trade in batch.trades:
            self.last_trade_id[trade.symbol] = max(trade.trade_id, self.last_trade_id.get(trade.symbol, -1))

    def _warn_if_slow_rotation(self) -> None:
        per_cycle = self.config.weight_budget * self.config.interval_s / 60
        rotation = self.scheduler.round_weight + ticker_weight(len(self.symbols))
        if rotation > per_cycle:
            log.warning("weight budget %d/min allows %.0f weight per %.0f s cycle; one round of per-symbol "
                        "requests weighs %d, so each symbol's klines/depth/trades refresh about every %.1f cycles",
                        self.config.weight_budget, per_cycle, self.config.interval_s, rotation,
                        self.scheduler.round_weight / max(1.0, per_cycle - ticker_weight(len(self.symbols))))
