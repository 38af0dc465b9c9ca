"""The project's one error vocabulary: every error raised on purpose is a `CdcError`.

Two families hang off the root:

- **Classified failures** (`ClassifiedError`): what an edge's `classify_<edge>_error(exc)` turns a
  library's exception into. The kind alone decides what the consumer loop does:
  - `TransientError`: the other side is away or overloaded (Cassandra unavailable, a timeout, a registry
    outage, a broker down). Wait with capped exponential backoff and jitter, pause the partitions, resume.
    Nothing is committed past the waiting record, nothing goes to the DLQ.
  - `PermanentRecordError`: this one record can never be applied (a value its column cannot hold, a write
    Cassandra rejects as invalid, a schema id the registry does not know). Park it in the DLQ with headers
    naming the edge, the error class and the message, and carry on with the next record.
  - `FatalError`: the process cannot go on (authentication refused, the live Cassandra schema no longer
    fits the mapping, the DLQ topic is not writable). Exit non-zero with a clear message.
  `reason` is a short stable tag (a metric label and the `cdc_consumer_paused{reason}` value); `message`
  is for people and never carries a secret.
- **Stage errors**, raised by the pure stages and named in DLQ headers (`cdc.error.type`):
  - decode (`DecodeError` and its subclasses): the record's bytes are not a change event. Permanent for
    the record, except `RegistryError`s, which the registry edge classifies (`RegistryUnavailable`
    transient, `UnknownSchemaId` permanent).
  - mapping: `MappingError` (the mapping file, or its fit with Cassandra, is wrong: a start-up error),
    `UnmappableRecord` (one event cannot become rows: DLQ), `ConversionError` (one value a conversion
    cannot take; the mapping reports it as `UnmappableRecord`).
  - sink: `SinkBackpressure`, the Cassandra sink's transient failure with the delay before its retry.
"""

from __future__ import annotations

import random
import uuid

from cdc_consumer.secrets import mask_text

SchemaRef = int | uuid.UUID  # an Avro writer schema's registry id (wire magic 0) or GUID (magic 1)


class CdcError(Exception):
    """Root of every error the project raises on purpose."""


# ------------------------------------------------------------------------------ classified failures

class ClassifiedError(CdcError):
    """A failure at an edge, classified: `kind` decides what happens next (see the module doc)."""

    kind = "error"

    def __init__(self, message: str, *, edge: str, reason: str, error_class: str | None = None) -> None:
        message = mask_text(message)
        super().__init__(message)
        self.message = message
        self.edge = edge  # cassandra, kafka, registry, decoder, mapping, dlq
        self.reason = reason  # short stable tag, e.g. cassandra_unavailable, invalid_value
        self.error_class = error_class or type(self).__name__  # the underlying library exception's class

    def __str__(self) -> str:
        return self.message

    def describe(self) -> str:
        return f"{self.edge}: {self.error_class}: {self.message}"


class TransientError(ClassifiedError):
    """Wait and try again: backoff with jitter, pause, resume."""

    kind = "transient"


class PermanentRecordError(ClassifiedError):
    """This record can never be applied: DLQ it and carry on."""

    kind = "permanent_record"


class FatalError(ClassifiedError):
    """The process cannot continue: exit non-zero with this message."""

    kind = "fatal"


# ------------------------------------------------------------------------------------------ decode

class DecodeError(CdcError):
    """A record that cannot be decoded. Carries where it came from; the consumer decides DLQ."""

    def __init__(self, reason: str, *, topic: str | None = None, partition: int | None = None,
                 offset: int | None = None) -> None:
        self.reason = reason
        self.topic = topic
        self.partition = partition
        self.offset = offset
        super().__init__(self.__str__())

    def __str__(self) -> str:
        where = f"{self.topic}[{self.partition}]@{self.offset}" if self.topic is not None else "record"
        return f"{where}: {self.reason}"


class SchemaError(DecodeError):
    """The record's schema cannot be used (e.g. a Decimal without a scale)."""


class InvalidValue(DecodeError):
    """A value does not match its schema (bad base64, out-of-range timestamp, missing field, ...)."""


class InvalidJson(DecodeError):
    """The key, value or a header is not valid JSON."""


class WireFormatError(DecodeError):
    """The bytes are not in Confluent's wire format (wrong magic byte, too short)."""


class InvalidAvro(DecodeError):
    """The Avro body does not match the schema its header names."""


class RegistryError(DecodeError):
    """The writer schema could not be had from the schema registry (or schemas file): the registry edge
    classifies it (`schema_registry.classify_registry_error`), not the decoder."""


class UnknownSchemaId(RegistryError):
    """The schema registry (or schemas file) has no schema with this id or GUID."""


class RegistryUnavailable(RegistryError):
    """The schema registry could not be asked (connection refused, timeout, HTTP 5xx, bad answer)."""


class InexactNumber(Exception):
    """A JSON number arrived as a binary float where an exact decimal is needed (decimal.format=NUMERIC).

    A signal inside the JSON decoder, never raised out of it (so not a CdcError), and not a ValueError on
    purpose: struct converters let it through so the decoder can re-parse the record with exact numbers.
    """


# ----------------------------------------------------------------------------------------- mapping

class MappingError(CdcError, ValueError):
    """The mapping file or its fit with the Cassandra schema is wrong (start-up error, exit 2)."""


class UnmappableRecord(CdcError):
    """One record cannot be turned into Cassandra rows; it goes to the DLQ with this reason."""


class ConversionError(CdcError, ValueError):
    """One value a mapping conversion cannot take (reported as the record's UnmappableRecord)."""


# -------------------------------------------------------------------------------------------- sink

class SinkBackpressure(TransientError):
    """Cassandra writes are failing transiently; pause consumption, they are retried after `retry_after` s."""

    def __init__(self, retry_after: float, cause: ClassifiedError) -> None:
        super().__init__(f"Cassandra writes failing ({cause.error_class}: {cause.message}); retrying in "
                         f"{retry_after:.1f}s", edge="cassandra", reason=cause.reason, error_class=cause.error_class)
        self.retry_after = retry_after


# ----------------------------------------------------------------------------------------- helpers

def describe_exception(exc: BaseException, limit: int = 300) -> str:
    """`Class: message`, cut to `limit` characters (for logs and DLQ headers), credentials masked."""
    return mask_text(f"{type(exc).__name__}: {exc}")[:limit]


def backoff_delay(attempt: int, initial: float, cap: float, rng: random.Random | None = None) -> float:
    """Capped exponential backoff with "equal jitter": half the step fixed, half random.

    Attempt 1 waits between initial/2 and initial; each further attempt doubles the step up to `cap`.
    The fixed half keeps a minimum pause; the random half keeps several consumers from retrying in step.
    """
    step = min(cap, initial * (2 ** max(0, attempt - 1)))
    return step / 2 + (rng or random).uniform(0, step / 2)
