"""Cassandra writer: buffered row operations -> collapsed, partition-grouped UNLOGGED batches.

Interface (after quix-streams' BaseSink): `add(token, writes)` buffers the writes of one Kafka record,
`flush()` sends the buffer as one chunk, `poll()` returns the tokens of records whose writes are all
acknowledged (the consumer commits past those only), and `flush()` raises `SinkBackpressure` while
Cassandra rejects writes, so the consumer pauses its partitions until `failing` clears.

Ordering and idempotence: every statement carries `USING TIMESTAMP` = the source commit time (µs), so
writes may reach Cassandra in any order, be retried or replayed, and the newest source change still
wins. Inside a chunk, several writes to one row collapse to the newest by (ts_us, lsn, arrival), with
TOAST-unavailable columns (UNSET) filled from the older write. Residual tie: two changes to one row in
the same source transaction share ts_us; inside a chunk they collapse correctly, but when they land in
different chunks Cassandra breaks the tie itself (a delete wins over an upsert; between two upserts
the larger cell value wins).

Failures: every failed request is retried with exponential backoff, forever (never skipped); the
record's token is only released once its request succeeds.
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from typing import Any

from cassandra.query import UNSET_VALUE, BatchStatement, BatchType

from cdc_consumer.mapping import Write
from cdc_consumer.metrics import ConsumerMetrics

log = logging.getLogger(__name__)


class SinkBackpressure(Exception):
    """Cassandra writes are failing; pause consumption and try again after `retry_after` seconds."""

    def __init__(self, retry_after: float, reason: str) -> None:
        super().__init__(f"Cassandra writes failing ({reason}); retrying in {retry_after:.1f}s")
        self.retry_after = retry_after
        self.reason = reason


@dataclass(eq=False)
class _Chunk:
    tokens: list[Hashable]
    outstanding: int = 0


@dataclass(eq=False)
class _Request:
    chunk: _Chunk
    statement: Any
    table: str
    rows: int
    deletes: int
    attempts: int = 0
    started: float = 0.0
    retry_at: float = 0.0


@dataclass
class SinkStats:
    requests: int = 0
    rows: int = 0
    failures: int = 0
    collapsed: int = 0


class CassandraSink:
    def __init__(self, session, *, max_batch_rows: int = 25, max_in_flight: int = 32,
                 retry_initial: float = 0.2, retry_max: float = 5.0, metrics: ConsumerMetrics | None = None) -> None:
        self.session = session
        self.max_batch_rows = max_batch_rows
        self.max_in_flight = max_in_flight
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.metrics = metrics
        self.stats = SinkStats()
        self._writes: list[Write] = []
        self._tokens: list[Hashable] = []
        self._completions: queue.SimpleQueue = queue.SimpleQueue()
        self._in_flight = 0
        self._retry: list[_Request] = []  # failed requests waiting for their next attempt
        self._unresolved: set[_Request] = set()  # failed requests not yet succeeded (waiting or re-sent)
        self._released: list[Hashable] = []
        self._last_error = ""

    # -------------------------------------------------------------------------- interface

    def add(self, token: Hashable, writes: Iterable[Write]) -> None:
        """Buffer the writes of one record; its token comes back from poll() once all are acknowledged."""
        self._writes.extend(writes)
        self._tokens.append(token)

    @property
    def buffered(self) -> int:
        return len(self._tokens)

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def failing(self) -> bool:
        """True from a request's failure until that request succeeds on a retry."""
        return bool(self._unresolved)

    def raise_if_failing(self) -> None:
        """SinkBackpressure while some write failed and has not yet succeeded on a retry."""
        if self._unresolved:
            raise SinkBackpressure(self._backoff(max(r.attempts for r in self._unresolved)), self._last_error)

    @property
    def idle(self) -> bool:
        return not self._tokens and not self._in_flight and not self._retry

    def flush(self) -> None:
        """Send everything buffered as one chunk; raises SinkBackpressure while writes are failing."""
        self._drain_completions(0)
        self._resend_due()
        self.raise_if_failing()
        if not self._tokens:
            return
        chunk = _Chunk(self._tokens)
        requests = [_Request(chunk, statement, table, rows, deletes)
                    for statement, table, rows, deletes in self._statements(collapse(self._writes, self.stats))]
        self._writes, self._tokens = [], []
        chunk.outstanding = len(requests)
        if not requests:
            self._released.extend(chunk.tokens)
        for request in requests:
            self._wait_for_slot()
            self._send(request)

    def poll(self, timeout: float = 0.0) -> list[Hashable]:
        """Handle acknowledgements and due retries; return tokens of records now fully applied."""
        self._drain_completions(timeout)
        self._resend_due()
        released, self._released = self._released, []
        return released

    def drain(self, timeout: float) -> bool:
        """Flush and wait until nothing is buffered, in flight or awaiting retry (True) or the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.flush()
            except SinkBackpressure:
                pass
            if self.idle:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._drain_completions(min(remaining, 0.05))
            self._resend_due()

    # ------------------------------------------------------------------------- internals

    def _statements(self, writes: list[Write]):
        """(statement, table, rows, deletes) per partition slice: one bound statement or an UNLOGGED batch."""
        for part in partition_slices(writes, self.max_batch_rows):
            deletes = sum(1 for w in part if w.is_delete)
            if len(part) == 1:
                yield bind(part[0]), part[0].target.table, 1, deletes
                continue
            batch = BatchStatement(batch_type=BatchType.UNLOGGED)
            for write in part:
                batch.add(bind(write))
            yield batch, part[0].target.table, len(part), deletes

    def _wait_for_slot(self) -> None:
        while self._in_flight >= self.max_in_flight:
            self._drain_completions(0.05)
            self._resend_due()

    def _send(self, request: _Request) -> None:
        request.attempts += 1
        request.started = time.perf_counter()
        self._in_flight += 1
        future = self.session.execute_async(request.statement)
        future.add_callbacks(self._on_success, self._on_error, callback_args=(request,), errback_args=(request,))

    # Driver callbacks run on its I/O thread: hand the outcome to the consumer thread.
    def _on_success(self, _rows, request: _Request) -> None:
        self._completions.put((request, None, time.perf_counter() - request.started))

    def _on_error(self, exc: BaseException, request: _Request) -> None:
        self._completions.put((request, exc, time.perf_counter() - request.started))

    def _drain_completions(self, timeout: float) -> None:
        block = timeout > 0
        while True:
            try:
                request, error, latency = self._completions.get(block=block, timeout=timeout if block else None)
            except queue.Empty:
                return
            block = False
            self._in_flight -= 1
            if error is None:
                self._succeeded(request, latency)
            else:
                self._failed(request, error)

    def _succeeded(self, request: _Request, latency: float) -> None:
        self.stats.requests += 1
        self.stats.rows += request.rows
        if self.metrics is not None:
            self.metrics.batch_latency.observe(latency)
            upserts = request.rows - request.deletes
            if upserts:
                self.metrics.rows_written.labels(request.table, "upsert").inc(upserts)
            if request.deletes:
                self.metrics.rows_written.labels(request.table, "delete").inc(request.deletes)
        if request.attempts > 1:
            self._unresolved.discard(request)
            log.info("write to %s succeeded after %d attempts", request.table, request.attempts)
        request.chunk.outstanding -= 1
        if request.chunk.outstanding == 0:
            self._released.extend(request.chunk.tokens)

    def _failed(self, request: _Request, error: BaseException) -> None:
        self.stats.failures += 1
        delay = self._backoff(request.attempts)
        request.retry_at = time.monotonic() + delay
        self._last_error = f"{type(error).__name__}: {error}"[:300]
        self._retry.append(request)
        self._unresolved.add(request)
        if self.metrics is not None:
            self.metrics.write_retries.labels(type(error).__name__).inc()
        log.warning("write to %s failed (attempt %d, retry in %.1fs): %s", request.table, request.attempts,
                    delay, self._last_error)

    def _resend_due(self) -> None:
        if not self._retry:
            return
        now = time.monotonic()
        due = [r for r in self._retry if r.retry_at <= now]
        for request in due:
            if self._in_flight >= self.max_in_flight:
                break
            self._retry.remove(request)
            self._send(request)

    def _backoff(self, attempts: int) -> float:
        return min(self.retry_max, self.retry_initial * (2 ** max(0, attempts - 1)))


def partition_slices(writes: list[Write], max_rows: int) -> list[list[Write]]:
    """Writes grouped by (table, partition key), each group cut into slices of at most max_rows."""
    partitions: dict[tuple, list[Write]] = {}
    for write in writes:
        partitions.setdefault((write.target.table, write.partition), []).append(write)
    return [group[start:start + max_rows] for group in partitions.values()
            for start in range(0, len(group), max_rows)]


def bind(write: Write):
    """The bound statement of one write: values then timestamp, or timestamp then key."""
    target = write.target
    if write.is_delete:
        return target.delete_binder.bind([write.timestamp, *write.key])
    return target.insert_binder.bind([*write.values, write.timestamp])


def collapse(writes: list[Write], stats: SinkStats | None = None) -> list[Write]:
    """Several writes to one row -> the newest; a delete followed by an upsert keeps both.

    Order: (ts_us, lsn) then arrival. Upserts merge (newer values win, UNSET ones keep the older value).
    A delete and a later upsert in the same source transaction share ts_us; the delete is moved 1 µs
    earlier so Cassandra (where a tombstone wins a timestamp tie) keeps the re-inserted row.
    """
    rows: dict[tuple, list[Write]] = {}
    for write in writes:
        rows.setdefault((id(write.target), write.key), []).append(write)
    if len(rows) == len(writes):
        return writes
    if stats is not None:
        stats.collapsed += len(writes) - len(rows)
    result: list[Write] = []
    for group in rows.values():
        result.extend(group if len(group) == 1 else _newest(group))
    return result


def _newest(group: list[Write]) -> list[Write]:
    deleted: Write | None = None
    upsert: Write | None = None
    for write in sorted(group, key=lambda w: w.order):  # stable: arrival order breaks ties
        if write.is_delete:
            deleted, upsert = write, None
        elif upsert is None:
            upsert = write
        else:
            merged = [new if new is not UNSET_VALUE else old for old, new in zip(upsert.values, write.values)]
            upsert = Write(write.target, write.key, merged, write.timestamp, write.order)
    if deleted is not None and upsert is not None and deleted.timestamp >= upsert.timestamp:
        deleted = Write(deleted.target, deleted.key, None, upsert.timestamp - 1, deleted.order)
    return [w for w in (deleted, upsert) if w is not None]
