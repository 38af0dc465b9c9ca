"""Test helpers shared by unit and integration tests."""

from __future__ import annotations

import time
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"
REPO = Path(__file__).resolve().parents[1]


def fixtures_dir() -> Path:
    """`../shared/fixtures` beside the clone (CI clones next to shared/)."""
    for candidate in (FIXTURES, REPO.parent / "shared" / "fixtures", Path("/work/shared/fixtures")):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("shared/fixtures not found beside the repository")


def unique_name(prefix: str) -> str:
    """A short unique identifier, valid in SQL, CQL and Kafka topic names."""
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def wait_until(predicate: Callable[[], T], *, timeout: float = 30.0, interval: float = 0.1,
               what: str = "condition", fatal: tuple[type[Exception], ...] = ()) -> T:
    """Poll `predicate` until it returns a truthy value or the deadline passes (then AssertionError).

    Exceptions raised by the predicate count as "not yet"; the last one is reported on timeout. Those of
    the `fatal` types end the wait at once (e.g. the process being waited for has exited).
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except fatal:
            raise
        except Exception as exc:  # noqa: BLE001 - retried until the deadline
            last_error = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}{detail}")
        time.sleep(interval)


def delete_topics(bootstrap: str, topics: list[str] | Callable[[str], bool]) -> None:
    """Delete the topics that exist (named, or every topic the predicate selects), and wait: an AdminClient
    dropped before its futures are done never sends the request, and leftover topics slow every later
    listing (`cdc dlq list` reads each DLQ topic)."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    wanted = topics if callable(topics) else set(topics).__contains__
    try:
        present = [t for t in admin.list_topics(timeout=10).topics if wanted(t)]
        for future in (admin.delete_topics(present, operation_timeout=30) if present else {}).values():
            future.result(timeout=60)
    except KafkaException as exc:  # clean-up only: a broker a test left down must not fail that test
        warnings.warn(f"could not delete topics {topics}: {exc}", stacklevel=2)


def delete_pipeline_topics(bootstrap: str, prefix: str) -> None:
    """Every topic a connector with `topic.prefix` = prefix wrote: its tables' and its heartbeat topic."""
    delete_topics(bootstrap, lambda t: t.startswith(f"{prefix}.") or t == f"__debezium-heartbeat.{prefix}")
