"""Cassandra writer: buffered row operations -> collapsed, partition-grouped UNLOGGED batches.

A `sink_protocol.Sink` (after quix-streams' BaseSink): `add(token, writes)` buffers the writes of one Kafka
record, `flush()` sends the buffer as one chunk, `poll()` returns the tokens of records whose writes are
all acknowledged (the consumer commits past those only), and `flush()` raises `SinkBackpressure` while
Cassandra rejects writes, so the consumer pauses its partitions until `failing` clears. A write is bound
through the statements the CQL edge prepared for its target (`cql_schema.TargetStatements`).

Ordering and idempotence: every statement carries `USING TIMESTAMP` = the source commit time (µs), so
writes may reach Cassandra in any order, be retried or replayed, and the newest source change still
wins. Inside a chunk, several writes to one row collapse to the newest by (ts_us, lsn, arrival), with
TOAST-unavailable columns (UNSET) filled from the older write. Residual tie: two changes to one row in
the same source transaction share ts_us; inside a chunk they collapse correctly, but when they land in
different chunks Cassandra breaks the tie itself (a delete wins over an upsert; between two upserts
the larger cell value wins).

Failures are classified by `cql_session.classify_cassandra_error` (see `cdc_consumer.errors`):
- transient (unavailable, timeouts, overloaded, no host, connection lost): the request is retried with
  capped exponential backoff and jitter until it succeeds, never skipped; meanwhile `raise_if_failing`
  raises SinkBackpressure so the consumer pauses. A token is released only once its writes succeeded.
- permanent for a record (Cassandra rejects a write as invalid, a value cannot be bound to its column):
  the records whose writes were in the rejected request (or whose values failed to bind) are isolated,
  their writes re-sent one statement each, and those that fail again come back from `rejected()` with
  the error instead of from `poll()`; the consumer parks them in the DLQ. Every other record of the
  chunk is applied as usual. This path only runs after a rejection, so the hot path does not pay for it.
- fatal (authentication refused, a table or column of the mapping dropped from the live schema):
  `raise_if_failing` (and so `flush`) raises the FatalError; the consumer stops and exits non-zero.
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Generic

from cassandra.query import UNSET_VALUE, BatchStatement, BatchType

from cdc_consumer.cql_session import classify_cassandra_error
from cdc_consumer.errors import (
    ClassifiedError,
    FatalError,
    PermanentRecordError,
    SinkBackpressure,
    backoff_delay,
)
from cdc_consumer.mapping import Write
from cdc_consumer.metrics import ConsumerMetrics
from cdc_consumer.sink_protocol import Token

log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Chunk:
    """The records of one flush: their writes (token i owns writes[spans[i]:spans[i+1]])."""

    tokens: list[Any]
    writes: list[Write]
    spans: list[int]
    outstanding: int = 0
    isolated: set[int] | None = None  # indexes of tokens taken out after a rejection

    def writes_of(self, index: int) -> list[Write]:
        end = self.spans[index + 1] if index + 1 < len(self.spans) else len(self.writes)
        return self.writes[self.spans[index]:end]

    def releasable(self) -> list[Any]:
        if not self.isolated:
            return self.tokens
        return [t for i, t in enumerate(self.tokens) if i not in self.isolated]


@dataclass(eq=False)
class _Isolation:
    """One record of a rejected request, its writes re-sent one statement each."""

    token: Any
    outstanding: int = 0
    error: PermanentRecordError | None = None


@dataclass(eq=False)
class _Request:
    chunk: _Chunk | _Isolation
    statement: Any
    table: str
    rows: int
    deletes: int
    partition: tuple = ()
    attempts: int = 0
    started: float = 0.0
    retry_at: float = 0.0


@dataclass
class SinkStats:
    requests: int = 0
    rows: int = 0
    failures: int = 0
    collapsed: int = 0


class CassandraSink(Generic[Token]):
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
        self._tokens: list[Token] = []
        self._spans: list[int] = []  # where each buffered token's writes start in _writes
        self._completions: queue.SimpleQueue = queue.SimpleQueue()
        self._in_flight = 0
        self._retry: list[_Request] = []  # failed requests waiting for their next attempt
        self._unresolved: set[_Request] = set()  # failed requests not yet succeeded (waiting or re-sent)
        self._released: list[Token] = []
        self._rejected: list[tuple[Token, PermanentRecordError]] = []
        self._last_error: ClassifiedError | None = None  # transient (the classifier's third kind)
        self._fatal: FatalError | None = None

    # -------------------------------------------------------------------------- interface

    def add(self, token: Token, writes: Iterable[Write]) -> None:
        """Buffer the writes of one record; its token comes back from poll() once all are acknowledged."""
        self._spans.append(len(self._writes))
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
        """FatalError once the process cannot go on; SinkBackpressure while some write failed transiently
        and has not yet succeeded on a retry."""
        if self._fatal is not None:
            raise self._fatal
        if self._unresolved and self._last_error is not None:
            retry_at = min(r.retry_at for r in self._unresolved)
            raise SinkBackpressure(max(0.0, retry_at - time.monotonic()), self._last_error)

    def rejected(self) -> list[tuple[Token, PermanentRecordError]]:
        """Tokens of records Cassandra rejects for good, with the error (the consumer parks them in the DLQ)."""
        rejected, self._rejected = self._rejected, []
        return rejected

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
        chunk = _Chunk(self._tokens, self._writes, self._spans)
        self._writes, self._tokens, self._spans = [], [], []
        try:
            requests = [_Request(chunk, *statement) for statement in self._statements(collapse(chunk.writes, self.stats))]
        except Exception as exc:  # noqa: BLE001 - a value that cannot be bound: find its record(s)
            requests = self._isolate_unbindable(chunk, exc)
        chunk.outstanding = len(requests)
        if not requests:
            self._released.extend(chunk.releasable())
        for request in requests:
            self._wait_for_slot()
            self._send(request)

    def poll(self, timeout: float = 0.0) -> list[Token]:
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
            except FatalError:
                return False
            if self.idle:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._drain_completions(min(remaining, 0.05))
            self._resend_due()

    def close(self, timeout: float) -> bool:
        """Drain; the session belongs to the caller, who shuts it down."""
        return self.drain(timeout)

    # ------------------------------------------------------------------------- internals

    def _statements(self, writes: list[Write]):
        """(statement, table, rows, deletes) per partition slice: one bound statement or an UNLOGGED batch."""
        for part in partition_slices(writes, self.max_batch_rows):
            deletes = sum(1 for w in part if w.is_delete)
            if len(part) == 1:
                yield bind(part[0]), part[0].target.table, 1, deletes, part[0].partition
                continue
            batch = BatchStatement(batch_type=BatchType.UNLOGGED)
            for write in part:
                batch.add(bind(write))
            yield batch, part[0].target.table, len(part), deletes, part[0].partition

    # ------------------------------------------------------------------ permanent failures (rare path)

    def _isolate_unbindable(self, chunk: _Chunk, first: Exception) -> list[_Request]:
        """Binding failed somewhere in the chunk: reject the records whose values cannot be bound (with
        the error), and build the requests of the others as usual."""
        keep: list[int] = []
        for index, token in enumerate(chunk.tokens):
            try:
                for write in chunk.writes_of(index):
                    bind(write)
            except Exception as exc:  # noqa: BLE001 - classified below
                self._reject(token, exc)
            else:
                keep.append(index)
        if len(keep) == len(chunk.tokens):  # binding failed only in combination: not a value problem
            raise classify_cassandra_error(first) from first
        kept = _Chunk([chunk.tokens[i] for i in keep], [], [])
        for index in keep:
            kept.spans.append(len(kept.writes))
            kept.writes.extend(chunk.writes_of(index))
        chunk.tokens, chunk.writes, chunk.spans = kept.tokens, kept.writes, kept.spans
        return [_Request(chunk, *statement) for statement in self._statements(collapse(chunk.writes, self.stats))]

    def _reject(self, token: Token, exc: BaseException) -> None:
        error = classify_cassandra_error(exc)
        if isinstance(error, FatalError):
            self._fatal = error
        elif isinstance(error, PermanentRecordError):
            self._rejected.append((token, error))
        else:  # a transient error while binding cannot happen; keep the record rather than lose it
            raise error from exc

    def _isolate_rejected(self, request: _Request, error: PermanentRecordError) -> None:
        """A request Cassandra rejected: re-send each record that wrote into it, one statement per write,
        so only the record(s) that fail again are parked."""
        if isinstance(request.chunk, _Isolation):  # already one record, one statement: that record is bad
            request.chunk.error = request.chunk.error or error
            self._settle(request)
            return
        chunk = request.chunk
        chunk.isolated = chunk.isolated or set()
        suspects = [i for i in range(len(chunk.tokens)) if i not in chunk.isolated
                    and any(w.target.table == request.table and w.partition == request.partition
                            for w in chunk.writes_of(i))]
        log.warning("Cassandra rejected a write to %s (%s): re-sending its %d record(s) one by one",
                    request.table, error.message, len(suspects))
        for index in suspects:
            chunk.isolated.add(index)
            isolation = _Isolation(chunk.tokens[index])
            requests = []
            for write in chunk.writes_of(index):
                try:
                    statement = bind(write)
                except Exception as exc:  # noqa: BLE001 - classified by _reject
                    isolation.error = isolation.error or PermanentRecordError(
                        str(exc), edge="cassandra", reason="invalid_value", error_class=type(exc).__name__)
                    continue
                requests.append(_Request(isolation, statement, write.target.table, 1, int(write.is_delete),
                                         write.partition))
            isolation.outstanding = len(requests)
            if not requests:
                self._finish_isolation(isolation)
            for isolated in requests:  # may briefly exceed max_in_flight: this runs inside a completion
                self._send(isolated)
        self._settle(request)

    def _settle(self, request: _Request) -> None:
        """A request is finished (succeeded, or rejected and isolated): count it against its owner."""
        owner = request.chunk
        owner.outstanding -= 1
        if owner.outstanding:
            return
        if isinstance(owner, _Isolation):
            self._finish_isolation(owner)
        else:
            self._released.extend(owner.releasable())

    def _finish_isolation(self, isolation: _Isolation) -> None:
        if isolation.error is None:
            self._released.append(isolation.token)
        else:
            self._rejected.append((isolation.token, isolation.error))

    def _wait_for_slot(self) -> None:
        while self._in_flight >= self.max_in_flight:
            self._drain_completions(0.05)
            self._resend_due()

    def _send(self, request: _Request) -> None:
        request.attempts += 1
        request.started = time.perf_counter()
        self._in_flight += 1
        try:
            future = self.session.execute_async(request.statement)
        except Exception as exc:  # noqa: BLE001 - e.g. a routing key over 64 KiB fails before any request
            self._completions.put((request, exc, 0.0))
            return
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
        self._settle(request)

    def _failed(self, request: _Request, exc: BaseException) -> None:
        self.stats.failures += 1
        error = classify_cassandra_error(exc)
        if isinstance(error, FatalError):
            self._fatal = error
            log.error("write to %s failed for good: %s", request.table, error.message)
            return
        self._unresolved.discard(request)
        if isinstance(error, PermanentRecordError):
            self._isolate_rejected(request, error)
            return
        delay = self._backoff(request.attempts)
        request.retry_at = time.monotonic() + delay
        self._last_error = error
        self._retry.append(request)
        self._unresolved.add(request)
        if self.metrics is not None:
            self.metrics.write_retries.labels(error.error_class).inc()
        log.warning("write to %s failed (attempt %d, retry in %.1fs): %s", request.table, request.attempts,
                    delay, error.describe())

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
        return backoff_delay(attempts, self.retry_initial, self.retry_max)


def partition_slices(writes: list[Write], max_rows: int) -> list[list[Write]]:
    """Writes grouped by (table, partition key), each group cut into slices of at most max_rows."""
    partitions: dict[tuple, list[Write]] = {}
    for write in writes:
        partitions.setdefault((write.target.table, write.partition), []).append(write)
    return [group[start:start + max_rows] for group in partitions.values()
            for start in range(0, len(group), max_rows)]


def bind(write: Write):
    """The bound statement of one write: values then timestamp, or timestamp then key."""
    statements = write.target.statements
    assert statements is not None, "a mapping compiled without a session cannot be written"
    if write.values is None:  # a delete
        return statements.delete_binder.bind([write.timestamp, *write.key])
    return statements.insert_binder.bind([*write.values, write.timestamp])


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
            assert upsert.values is not None and write.values is not None  # neither is a delete
            merged = [new if new is not UNSET_VALUE else old for old, new in zip(upsert.values, write.values)]
            upsert = Write(write.target, write.key, merged, write.timestamp, write.order)
    if deleted is not None and upsert is not None and deleted.timestamp >= upsert.timestamp:
        deleted = Write(deleted.target, deleted.key, None, upsert.timestamp - 1, deleted.order)
    return [w for w in (deleted, upsert) if w is not None]
