"""One vocabulary for failures, shared by every edge (Cassandra, Kafka, schema registry, decoder, mapping).

Every failure the pipeline meets is one of three kinds, and the kind alone decides what happens:

- `TransientError`: the other side is away or overloaded (Cassandra unavailable, a timeout, a registry
  outage, a broker down). Wait with capped exponential backoff and jitter, pause the partitions, resume.
  Nothing is committed past the waiting record, nothing goes to the DLQ.
- `PermanentRecordError`: this one record can never be applied (a value its column cannot hold, a write
  Cassandra rejects as invalid, a schema id the registry does not know). Park it in the DLQ with headers
  naming the edge, the error class and the message, and carry on with the next record.
- `FatalError`: the process cannot go on (authentication refused, the live Cassandra schema no longer
  fits the mapping, the DLQ topic is not writable). Exit non-zero with a clear message.

Each edge has one `classify_<edge>_error(exc)` function that turns the library's exception into one of
these; the consumer loop only ever looks at the three kinds. `reason` is a short stable tag (a metric
label and the `cdc_consumer_paused{reason}` value); `message` is for people and never carries a secret.
"""

from __future__ import annotations

import random
import re


class CdcError(Exception):
    """Root of the project's failure vocabulary."""

    kind = "error"

    def __init__(self, message: str, *, edge: str, reason: str, error_class: str | None = None) -> None:
        message = redact(message)
        super().__init__(message)
        self.message = message
        self.edge = edge  # cassandra, kafka, registry, decoder, mapping, dlq
        self.reason = reason  # short stable tag, e.g. cassandra_unavailable, invalid_value
        self.error_class = error_class or type(self).__name__  # the underlying library exception's class

    def __str__(self) -> str:
        return self.message

    def describe(self) -> str:
        return f"{self.edge}: {self.error_class}: {self.message}"


class TransientError(CdcError):
    """Wait and try again: backoff with jitter, pause, resume."""

    kind = "transient"


class PermanentRecordError(CdcError):
    """This record can never be applied: DLQ it and carry on."""

    kind = "permanent_record"


class FatalError(CdcError):
    """The process cannot continue: exit non-zero with this message."""

    kind = "fatal"


def describe_exception(exc: BaseException, limit: int = 300) -> str:
    """`Class: message`, cut to `limit` characters (for logs and DLQ headers)."""
    return redact(f"{type(exc).__name__}: {exc}")[:limit]


def backoff_delay(attempt: int, initial: float, cap: float, rng: random.Random | None = None) -> float:
    """Capped exponential backoff with "equal jitter": half the step fixed, half random.

    Attempt 1 waits between initial/2 and initial; each further attempt doubles the step up to `cap`.
    The fixed half keeps a minimum pause; the random half keeps several consumers from retrying in step.
    """
    step = min(cap, initial * (2 ** max(0, attempt - 1)))
    return step / 2 + (rng or random).uniform(0, step / 2)


_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")
_SECRET_PARAM = re.compile(r"(?i)\b(password|passwd|secret|token|api[_-]?key)=([^&\s;]+)")


def redact(text: str) -> str:
    """Text with URL credentials (`scheme://user:pass@`) and `password=...`-style values blanked: error
    messages reach logs, metrics, `cdc status` and DLQ headers, and none of those may carry a secret."""
    return _SECRET_PARAM.sub(r"\1=***", _USERINFO.sub("***@", text))
