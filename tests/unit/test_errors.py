"""The failure vocabulary: each edge's classifier, backoff with jitter, redaction."""

from __future__ import annotations

import random
import struct

import pytest
from cassandra import (
    AuthenticationFailed,
    ConsistencyLevel,
    InvalidRequest,
    OperationTimedOut,
    Unauthorized,
    Unavailable,
    WriteTimeout,
)
from cassandra.cluster import NoHostAvailable
from cassandra.connection import ConnectionShutdown
from cassandra.protocol import OverloadedErrorMessage
from confluent_kafka import KafkaError

from cdc_consumer.cql_session import classify_cassandra_error
from cdc_consumer.dlq import classify_kafka_error
from cdc_consumer.errors import (
    FatalError,
    PermanentRecordError,
    RegistryUnavailable,
    TransientError,
    UnknownSchemaId,
    backoff_delay,
)
from cdc_consumer.schema_registry import classify_registry_error
from cdc_consumer.secrets import MASK, mask_text


def _struct_error() -> struct.error:
    try:
        struct.pack(">H", 70_000)
    except struct.error as exc:
        return exc
    raise AssertionError("struct.pack accepted 70000 as an unsigned short")


@pytest.mark.parametrize("exc", [
    Unavailable("x", consistency=ConsistencyLevel.ONE, required_replicas=1, alive_replicas=0),
    WriteTimeout("x", write_type=0), OperationTimedOut("x"), NoHostAvailable("x", {"h": ConnectionShutdown("down")}),
    ConnectionShutdown("x"), OverloadedErrorMessage(0x1001, "overloaded", None),
])
def test_cassandra_outages_and_overload_are_transient(exc):
    error = classify_cassandra_error(exc)
    assert type(error) is TransientError and error.reason == "cassandra_unavailable" and error.edge == "cassandra"


@pytest.mark.parametrize("exc, reason", [
    (InvalidRequest("Key length of 70000 is longer than maximum of 65535"), "invalid_request"),
    (TypeError("Received an argument of invalid type for column last_price"), "invalid_value"),
    (_struct_error(), "invalid_value"),
    (OverflowError("int too big to convert"), "invalid_value"),
])
def test_a_rejected_write_or_unbindable_value_is_permanent_for_its_record(exc, reason):
    error = classify_cassandra_error(exc)
    assert type(error) is PermanentRecordError and error.reason == reason


@pytest.mark.parametrize("exc, reason", [
    (InvalidRequest("Undefined column name number_of_trades in table t.klines_by_bucket"), "schema_mismatch"),
    (InvalidRequest("unconfigured table klines_by_bucket"), "schema_mismatch"),
    (AuthenticationFailed("bad credentials"), "cassandra_auth"),
    (Unauthorized("no MODIFY permission"), "cassandra_auth"),
    (NoHostAvailable("x", {"h": AuthenticationFailed("bad credentials")}), "cassandra_auth"),
])
def test_auth_refused_and_schema_drift_are_fatal(exc, reason):
    error = classify_cassandra_error(exc)
    assert type(error) is FatalError and error.reason == reason


def test_kafka_delivery_errors_split_into_transient_and_fatal():
    assert type(classify_kafka_error(KafkaError(KafkaError._MSG_TIMED_OUT), "t.dlq")) is TransientError
    assert type(classify_kafka_error(KafkaError(KafkaError._ALL_BROKERS_DOWN), "t.dlq")) is TransientError
    fatal = classify_kafka_error(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED), "t.dlq")
    assert type(fatal) is FatalError and fatal.message.startswith("DLQ topic t.dlq not writable")
    assert type(classify_kafka_error(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE), "t.dlq")) is FatalError


def test_registry_outage_is_transient_and_an_unknown_id_is_permanent():
    assert type(classify_registry_error(RegistryUnavailable("HTTP 503"))) is TransientError
    assert classify_registry_error(RegistryUnavailable("unreachable")).reason == "registry_unavailable"
    unknown = classify_registry_error(UnknownSchemaId("no schema 7"))
    assert type(unknown) is PermanentRecordError and unknown.edge == "registry"


def test_backoff_doubles_up_to_the_cap_with_jitter_in_the_upper_half():
    rng = random.Random(1)
    for attempt, step in ((1, 0.5), (2, 1.0), (3, 2.0), (6, 10.0), (30, 10.0)):
        delays = [backoff_delay(attempt, 0.5, 10.0, rng) for _ in range(200)]
        assert all(step / 2 <= d <= step for d in delays)
        assert max(delays) - min(delays) > step / 4  # really jittered


def test_credentials_never_survive_into_messages():
    error = TransientError("GET http://admin:hunter2@registry:8081/schemas/ids/1 failed; password=hunter2",
                           edge="registry", reason="registry_unavailable")
    assert "hunter2" not in error.message and "hunter2" not in error.describe()
    assert mask_text("postgresql://cdc:pw@db/cdc") == f"postgresql://cdc:{MASK}@db/cdc"
    assert mask_text("dsn host=db sslpassword=pw2 port=5432") == f"dsn host=db sslpassword={MASK} port=5432"
    assert mask_text("price 1.5 at host:9042 key=value") == "price 1.5 at host:9042 key=value"
