"""Cassandra edge: one place that builds a Cluster/Session from settings."""

from __future__ import annotations

from cassandra.cluster import Cluster, NoHostAvailable, Session

from cdc_consumer.config import CassandraSettings
from cdc_consumer.pg import ServiceUnavailable


def connect(cfg: CassandraSettings, *, keyspace: str | None = None, timeout: float = 10.0) -> tuple[Cluster, Session]:
    """Connect (protocol pinned, no negotiation noise); keyspace optional. Caller shuts the cluster down."""
    cluster = Cluster(list(cfg.hosts), port=cfg.port, protocol_version=cfg.protocol_version,
                      connect_timeout=timeout)
    try:
        session = cluster.connect(keyspace)
    except NoHostAvailable as exc:
        cluster.shutdown()
        raise ServiceUnavailable(f"Cassandra unreachable at {','.join(cfg.hosts)}:{cfg.port}: {exc}") from exc
    return cluster, session
