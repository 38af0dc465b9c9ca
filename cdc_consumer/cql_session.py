"""Cassandra edge: one place that builds a Cluster/Session from settings (auth, TLS, DC, consistency)."""

from __future__ import annotations

import decimal
import logging
import ssl
import struct

from cassandra import AuthenticationFailed, ConfigurationException, ConsistencyLevel, InvalidRequest, Unauthorized
from cassandra.auth import PlainTextAuthProvider
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile, NoHostAvailable, Session
from cassandra.policies import ConstantReconnectionPolicy, DCAwareRoundRobinPolicy, TokenAwarePolicy
from cassandra.protocol import SyntaxException

from cdc_consumer.config import CassandraSettings
from cdc_consumer.errors import ClassifiedError, FatalError, PermanentRecordError, TransientError, describe_exception
from cdc_consumer.pg import ServiceUnavailable
from cdc_consumer.secrets import redact


class _OneLineDriverErrors(logging.Filter):
    """The driver logs each failed connection attempt with a traceback; `connect` raises one named error for
    it instead, so those records are dropped, and other driver records keep their exception as one line."""

    _CONNECT_FAILURES = ("[control connection] Error connecting", "Control connection failed to connect")

    def filter(self, record: logging.LogRecord) -> bool:
        if str(record.msg).startswith(self._CONNECT_FAILURES):
            return False
        if record.exc_info and record.exc_info[1] is not None:
            record.msg = f"{record.getMessage()} {reason(record.exc_info[1])}"
            record.args, record.exc_info, record.exc_text = (), None, None
        return True


for _name in ("cassandra.cluster", "cassandra.connection", "cassandra.pool"):
    logging.getLogger(_name).addFilter(_OneLineDriverErrors())


def ssl_context(cfg: CassandraSettings) -> ssl.SSLContext | None:
    """TLS when a CA is configured: the server's certificate must chain to it and name the host (or IP)
    the driver connects to; a client certificate is presented when one is configured (mutual TLS)."""
    if not cfg.ssl_ca:
        return None
    try:
        context = ssl.create_default_context(cafile=cfg.ssl_ca)  # CERT_REQUIRED + check_hostname
        if cfg.ssl_cert:
            context.load_cert_chain(cfg.ssl_cert, cfg.ssl_key, password=cfg.ssl_key_password)
    except (OSError, ssl.SSLError) as exc:
        raise ServiceUnavailable(f"Cassandra TLS setup failed: {reason(exc)}") from None
    return context


def cluster_for(cfg: CassandraSettings, *, timeout: float = 10.0, request_timeout: float = 10.0) -> Cluster:
    """A Cluster with protocol pinned (no negotiation noise), token-aware routing in the local DC, the
    configured consistency, and a 1 s reconnection policy so a consumer resumes within a second of
    Cassandra coming back after an outage."""
    profile = ExecutionProfile(load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy(local_dc=cfg.local_dc)),
                               request_timeout=request_timeout,
                               consistency_level=ConsistencyLevel.name_to_value[cfg.consistency])
    auth = PlainTextAuthProvider(cfg.username, cfg.password or "") if cfg.username else None
    return Cluster(list(cfg.hosts), port=cfg.port, protocol_version=cfg.protocol_version,
                   connect_timeout=timeout, execution_profiles={EXEC_PROFILE_DEFAULT: profile},
                   reconnection_policy=ConstantReconnectionPolicy(1.0), auth_provider=auth,
                   ssl_context=ssl_context(cfg))


def connect(cfg: CassandraSettings, *, keyspace: str | None = None, timeout: float = 10.0) -> tuple[Cluster, Session]:
    """Connect (protocol pinned, no negotiation noise); keyspace optional. Caller shuts the cluster down."""
    cluster = cluster_for(cfg, timeout=timeout)
    try:
        session = cluster.connect(keyspace)
    except NoHostAvailable as exc:
        cluster.shutdown()
        where, cause = f"{','.join(cfg.hosts)}:{cfg.port}", _cause(exc, cfg)
        if cause.startswith("unreachable: "):
            raise ServiceUnavailable(f"Cassandra unreachable at {where}: {cause.removeprefix('unreachable: ')}") from None
        raise ServiceUnavailable(f"Cassandra at {where}: {cause}") from None
    except Exception as exc:  # the driver raises a few other types (e.g. InvalidRequest for a bad keyspace)
        cluster.shutdown()
        raise ServiceUnavailable(f"Cassandra at {','.join(cfg.hosts)}:{cfg.port}: "
                                 f"{redact(reason(exc), cfg.secrets)}") from None
    return cluster, session


def _cause(exc: NoHostAvailable, cfg: CassandraSettings) -> str:
    """The most telling per-host error, named by kind: authentication, TLS, or unreachable."""
    errors = list(getattr(exc, "errors", {}).values())
    for error in errors:
        if isinstance(error, AuthenticationFailed) or "Bad credentials" in str(error):
            return "authentication failed (wrong username or password): " + redact(_server_message(error), cfg.secrets)
        if "requires authentication" in str(error) or "AuthenticationFailed" in type(error).__name__:
            return "the server requires authentication (set CDC_CASSANDRA_USERNAME/CDC_CASSANDRA_PASSWORD)"
    for error in errors:
        if isinstance(error, ssl.SSLError) or "SSL" in str(error) or "certificate" in str(error):
            return f"TLS handshake failed: {reason(error)}{_client_certificate_hint(error, cfg)}"
    if errors and not cfg.ssl_ca and any(_looks_like_tls_port(e) for e in errors):
        return ("connection closed during the handshake — the port probably requires TLS "
                f"(set CDC_CASSANDRA_SSL_CA): {reason(errors[0])}")
    reasons = "; ".join(sorted({redact(reason(e), cfg.secrets) for e in errors})) or str(exc)
    return f"unreachable: {reasons}"


def _client_certificate_hint(error: Exception, cfg: CassandraSettings) -> str:
    """A server that requires a client certificate hangs up at the end of the handshake when none is
    presented: with TLS 1.3 the client sees only an EOF (or a "certificate required" alert)."""
    if cfg.ssl_cert or not any(s in str(error) for s in ("EOF", "certificate required", "CERTIFICATE_REQUIRED")):
        return ""
    return " — the server may require a client certificate (set CDC_CASSANDRA_SSL_CERT and CDC_CASSANDRA_SSL_KEY)"


def _looks_like_tls_port(error: Exception) -> bool:
    text = str(error).lower()
    return any(s in text for s in ("connection reset", "closed", "eof", "timed out", "protocol"))


def _server_message(error: Exception) -> str:
    text = str(error)
    start = text.find("message=")
    return text[start + len("message="):].strip(" \"')") if start >= 0 else text


def reason(exc: BaseException) -> str:
    """A driver error in one line (at most 300 characters), for a user's message; redact it before showing."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


# --- failure classification of the Cassandra edge (see cdc_consumer.errors) -------------------------

# InvalidRequest texts that mean the live schema lost a table or column the mapping writes: no record
# can be applied any more, so the process stops instead of parking every record in the DLQ.
_SCHEMA_DRIFT = ("undefined column name", "unconfigured table", "unknown identifier", "does not exist",
                 "unknown column")


def classify_cassandra_error(exc: BaseException) -> ClassifiedError:
    """Transient (wait, pause, resume), permanent for the record (DLQ) or fatal (exit) for a driver error,
    or for an error raised while binding a value (a value the column type cannot hold)."""
    if isinstance(exc, ClassifiedError):
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
