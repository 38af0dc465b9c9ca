"""Cassandra edge: one place that builds a Cluster/Session from settings."""

from __future__ import annotations

import decimal
import struct

from cassandra import AuthenticationFailed, ConfigurationException, InvalidRequest, Unauthorized
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile, NoHostAvailable, Session
from cassandra.policies import ConstantReconnectionPolicy, DCAwareRoundRobinPolicy, TokenAwarePolicy
from cassandra.protocol import SyntaxException

from cdc_consumer.config import CassandraSettings
from cdc_consumer.errors import CdcError, FatalError, PermanentRecordError, TransientError, describe_exception
from cdc_consumer.pg import ServiceUnavailable


def cluster_for(cfg: CassandraSettings, *, timeout: float = 10.0, request_timeout: float = 10.0) -> Cluster:
    """A Cluster with protocol pinned (no negotiation noise), token-aware routing, and a 1 s reconnection
    policy so a consumer resumes within a second of Cassandra coming back after an outage."""
    profile = ExecutionProfile(load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy()),
                               request_timeout=request_timeout)
    return Cluster(list(cfg.hosts), port=cfg.port, protocol_version=cfg.protocol_version,
                   connect_timeout=timeout, execution_profiles={EXEC_PROFILE_DEFAULT: profile},
                   reconnection_policy=ConstantReconnectionPolicy(1.0))


def connect(cfg: CassandraSettings, *, keyspace: str | None = None, timeout: float = 10.0) -> tuple[Cluster, Session]:
    """Connect (protocol pinned, no negotiation noise); keyspace optional. Caller shuts the cluster down."""
    cluster = cluster_for(cfg, timeout=timeout)
    try:
        session = cluster.connect(keyspace)
    except NoHostAvailable as exc:
        cluster.shutdown()
        raise ServiceUnavailable(f"Cassandra unreachable at {','.join(cfg.hosts)}:{cfg.port}: {exc}") from exc
    return cluster, session


# --- failure classification of the Cassandra edge (see cdc_consumer.errors) -------------------------

# InvalidRequest texts that mean the live schema lost a table or column the mapping writes: no record
# can be applied any more, so the process stops instead of parking every record in the DLQ.
_SCHEMA_DRIFT = ("undefined column name", "unconfigured table", "unknown identifier", "does not exist",
                 "unknown column")


def classify_cassandra_error(exc: BaseException) -> CdcError:
    """Transient (wait, pause, resume), permanent for the record (DLQ) or fatal (exit) for a driver error,
    or for an error raised while binding a value (a value the column type cannot hold)."""
    if isinstance(exc, CdcError):
        return exc
    name = "struct.error" if isinstance(exc, struct.error) else type(exc).__name__
    message = f"{name}: {exc}"[:300] if isinstance(exc, struct.error) else describe_exception(exc)
    if isinstance(exc, NoHostAvailable):
        inner = list((exc.errors or {}).values())
        if inner and all(isinstance(e, AuthenticationFailed | Unauthorized) for e in inner):
            return FatalError(f"Cassandra refused authentication: {message}", edge="cassandra",
                              reason="cassandra_auth", error_class=name)
        return TransientError(message, edge="cassandra", reason="cassandra_unavailable", error_class=name)
    if isinstance(exc, AuthenticationFailed | Unauthorized):
        return FatalError(f"Cassandra refused access: {message}", edge="cassandra", reason="cassandra_auth",
                          error_class=name)
    if isinstance(exc, InvalidRequest | ConfigurationException):
        if any(text in str(exc).lower() for text in _SCHEMA_DRIFT):
            return FatalError(f"the live Cassandra schema no longer fits the mapping: {message}",
                              edge="cassandra", reason="schema_mismatch", error_class=name)
        return PermanentRecordError(message, edge="cassandra", reason="invalid_request", error_class=name)
    if isinstance(exc, SyntaxException):  # a statement the project generated is wrong: a bug, not data
        return FatalError(f"Cassandra rejected a generated statement: {message}", edge="cassandra",
                          reason="cassandra_syntax", error_class=name)
    if isinstance(exc, TypeError | ValueError | OverflowError | struct.error | decimal.InvalidOperation):
        return PermanentRecordError(f"value cannot be bound: {message}", edge="cassandra",
                                    reason="invalid_value", error_class=name)
    # Unavailable, Read/WriteTimeout, Read/WriteFailure, OperationTimedOut, Overloaded, IsBootstrapping,
    # ServerError, connection errors, and anything unknown: waiting is safe (nothing is skipped) and
    # never silent (the consumer pauses with a WARNING naming this reason every progress interval).
    return TransientError(message, edge="cassandra", reason="cassandra_unavailable", error_class=name)
