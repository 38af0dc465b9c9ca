"""Cassandra edge: one place that builds a Cluster/Session from settings."""

from __future__ import annotations

from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile, NoHostAvailable, Session
from cassandra.policies import ConstantReconnectionPolicy, DCAwareRoundRobinPolicy, TokenAwarePolicy

from cdc_consumer.config import CassandraSettings
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
