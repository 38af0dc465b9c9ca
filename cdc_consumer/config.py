"""Typed settings for every edge of the pipeline, read from `CDC_*` environment variables.

Defaults point at the local native stack (`compose/native/stack`), whose ports can be moved with
`CDC_PG_PORT`, `CDC_KAFKA_PORT`, `CDC_CONNECT_PORT`, `CDC_REGISTRY_PORT`, `CDC_CASSANDRA_PORT`,
`CDC_ALERTMANAGER_PORT`; a full
URL/DSN variable wins over the port variable. Credentials live apart from behaviour: the PostgreSQL
password is only ever read from `CDC_PG_PASSWORD` (or the DSN) and is never printed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

# The native stack's registry is Apicurio: consumers read its Confluent-compatible API, the Connect
# converter (Apicurio's own client) writes through its v2 API on the same server.
REGISTRY_CCOMPAT_PATH = "/apis/ccompat/v7"
REGISTRY_API_PATH = "/apis/registry/v2"

DEFAULT_PORTS = {
    "CDC_PG_PORT": 5432,
    "CDC_KAFKA_PORT": 9092,
    "CDC_CONNECT_PORT": 8083,
    "CDC_REGISTRY_PORT": 8081,
    "CDC_CASSANDRA_PORT": 9042,
    "CDC_PROMETHEUS_PORT": 9090,
    "CDC_ALERTMANAGER_PORT": 9095,
}


def _port(env: Mapping[str, str], name: str) -> int:
    raw = env.get(name, "")
    if not raw:
        return DEFAULT_PORTS[name]
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise ValueError(f"{name}={raw!r} is not a TCP port")
    return int(raw)


def _protocol_version(env: Mapping[str, str]) -> int:
    raw = env.get("CDC_CASSANDRA_PROTOCOL_VERSION", "") or "4"
    if raw not in ("3", "4", "5"):
        raise ValueError(f"CDC_CASSANDRA_PROTOCOL_VERSION={raw!r} is not a CQL native protocol version (3, 4 or 5)")
    return int(raw)


def _registry_api_url(ccompat_url: str) -> str:
    """Apicurio's v2 API on the server whose Confluent-compatible API is `ccompat_url`."""
    base = ccompat_url.rstrip("/")
    if base.endswith(REGISTRY_CCOMPAT_PATH):
        base = base[: -len(REGISTRY_CCOMPAT_PATH)]
    return base + REGISTRY_API_PATH


@dataclass(frozen=True)
class PostgresSettings:
    dsn: str
    password: str | None = field(default=None, repr=False)

    def connect_kwargs(self) -> dict:
        """Keyword arguments for psycopg.connect (password kept out of the DSN string)."""
        kwargs: dict = {"conninfo": self.dsn}
        if self.password:
            kwargs["password"] = self.password
        return kwargs


@dataclass(frozen=True)
class CassandraSettings:
    hosts: tuple[str, ...]
    port: int
    keyspace: str
    # v4, not v5: v5's checksummed framing costs the driver a pure-Python CRC32 per segment, ~15% more
    # CPU per write request in the consumer's hot path; nothing here uses a v5-only feature.
    protocol_version: int = 4


@dataclass(frozen=True)
class Settings:
    postgres: PostgresSettings
    kafka_bootstrap: str
    connect_url: str
    schema_registry_url: str
    cassandra: CassandraSettings
    registry_api_url: str = ""
    prometheus_url: str = "http://127.0.0.1:9090"
    alertmanager_url: str = "http://127.0.0.1:9095"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        pg_port = _port(env, "CDC_PG_PORT")
        registry_url = (env.get("CDC_SCHEMA_REGISTRY_URL")
                        or f"http://127.0.0.1:{_port(env, 'CDC_REGISTRY_PORT')}{REGISTRY_CCOMPAT_PATH}")
        hosts = tuple(h.strip() for h in env.get("CDC_CASSANDRA_HOSTS", "127.0.0.1").split(",") if h.strip())
        return cls(
            postgres=PostgresSettings(
                dsn=env.get("CDC_PG_DSN") or f"postgresql://cdc@127.0.0.1:{pg_port}/cdc",
                password=env.get("CDC_PG_PASSWORD") or None,
            ),
            kafka_bootstrap=env.get("CDC_KAFKA_BOOTSTRAP") or f"127.0.0.1:{_port(env, 'CDC_KAFKA_PORT')}",
            connect_url=env.get("CDC_CONNECT_URL") or f"http://127.0.0.1:{_port(env, 'CDC_CONNECT_PORT')}",
            schema_registry_url=registry_url,
            registry_api_url=env.get("CDC_REGISTRY_API_URL") or _registry_api_url(registry_url),
            cassandra=CassandraSettings(
                hosts=hosts or ("127.0.0.1",),
                port=_port(env, "CDC_CASSANDRA_PORT"),
                keyspace=env.get("CDC_CASSANDRA_KEYSPACE", "market"),
                protocol_version=_protocol_version(env),
            ),
            prometheus_url=env.get("CDC_PROMETHEUS_URL")
            or f"http://127.0.0.1:{_port(env, 'CDC_PROMETHEUS_PORT')}",
            alertmanager_url=env.get("CDC_ALERTMANAGER_URL")
            or f"http://127.0.0.1:{_port(env, 'CDC_ALERTMANAGER_PORT')}",
        )
