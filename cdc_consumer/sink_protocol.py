"""The `Sink` protocol: where the consumer hands a record's writes, and how it learns they are done.

Modelled on quix-streams' `sinks/base` (BaseSink): a small interface, flush before commit, and one
backpressure exception. The consumer gives every Kafka record a token; it commits a partition only past
records whose tokens came back, so whatever a sink does inside (batching, retries, async I/O), nothing
is committed before it is applied.

    add(token, writes)  buffer one record's writes (any number, none included)
    flush()             send what is buffered; raises SinkBackpressure while the destination fails
                        transiently (the consumer pauses, then calls flush again), FatalError when the
                        process cannot go on
    poll(timeout)       the tokens of records whose writes are all acknowledged
    rejected()          the tokens of records the destination refuses for good, with the error (DLQ)
    drain(timeout)      flush and wait until nothing is outstanding (a revoke, a shutdown); True if so
    close(timeout)      drain before the sink is let go; True if nothing was left outstanding
    buffered, in_flight records added but not flushed; requests sent and not yet acknowledged

Implemented by `sink.CassandraSink` (writes: `mapping.Write`) and `dlq.DeadLetterQueue` (writes:
`dlq.DeadLetter`); tests/unit/test_sink_protocol.py checks both.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, TypeVar, runtime_checkable

from cdc_consumer.errors import PermanentRecordError, SinkBackpressure

Token = TypeVar("Token")  # the token of a record: opaque to the sink, handed back as it was given
W_contra = TypeVar("W_contra", contravariant=True)  # the sink's kind of write
__all__ = ["Sink", "SinkBackpressure", "Token"]  # SinkBackpressure (errors.py) is part of the protocol


@runtime_checkable
class Sink(Protocol[Token, W_contra]):
    """A destination of records' writes that hands back each record's token once it is done."""

    @property
    def buffered(self) -> int: ...

    @property
    def in_flight(self) -> int: ...

    def add(self, token: Token, writes: Iterable[W_contra]) -> None: ...

    def flush(self) -> None: ...

    def poll(self, timeout: float = 0.0) -> list[Token]: ...

    def rejected(self) -> list[tuple[Token, PermanentRecordError]]: ...

    def drain(self, timeout: float) -> bool: ...

    def close(self, timeout: float) -> bool: ...
