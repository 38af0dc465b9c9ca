"""Typed settings for every edge of the pipeline, read from `CDC_*` environment variables.

Defaults point at the local native stack (`compose/native/stack`), whose ports can be moved with
`CDC_PG_PORT`, `CDC_KAFKA_PORT`, `CDC_CONNECT_PORT`, `CDC_REGISTRY_PORT`, `CDC_CASSANDRA_PORT`,
`CDC_PROMETHEUS_PORT`, `CDC_ALERTMANAGER_PORT`; a full URL/DSN variable wins over the port variable.
Credentials live apart from behaviour: they sit in fields of their own, excluded from every repr, read
from `CDC_*_PASSWORD` variables, files, or a URL/DSN, and are never printed.

Security per edge: Cassandra `CDC_CASSANDRA_USERNAME`/`_PASSWORD`, `CDC_CASSANDRA_SSL_CA` (TLS on, host
verified), `CDC_CASSANDRA_SSL_CERT` + `_KEY` (mutual TLS); Kafka `CDC_KAFKA_CONFIG` (a librdkafka client
properties file as Confluent Cloud / MSK hand out); Connect and the schema registry: basic auth and a CA.
"""

from __future__ import annotations

import os
import re
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


CONSISTENCY_LEVELS = ("ANY", "ONE", "TWO", "THREE", "QUORUM", "ALL", "LOCAL_QUORUM", "EACH_QUORUM", "LOCAL_ONE")


def _consistency(env: Mapping[str, str]) -> str:
    raw = (env.get("CDC_CASSANDRA_CONSISTENCY", "") or "LOCAL_QUORUM").upper()
    if raw not in CONSISTENCY_LEVELS:
        raise ValueError(f"CDC_CASSANDRA_CONSISTENCY={raw!r} is not a consistency level ({', '.join(CONSISTENCY_LEVELS)})")
    return raw


def _readable_file(env: Mapping[str, str], name: str) -> str | None:
    """The path in variable `name`, checked to be a readable file (None when unset)."""
    path = env.get(name, "")
    if not path:
        return None
    if not os.path.isfile(path) or not os.access(path, os.R_OK):
        raise ValueError(f"{name}={path}: no such readable file")
    return path


def read_properties(path: str, *, what: str = "CDC_KAFKA_CONFIG") -> dict[str, str]:
    """`key=value` (or `key: value`) lines of a Java-style properties file; `#`/`!` comments, blank lines."""
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{what}={path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    properties: dict[str, str] = {}
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line[0] in "#!":
            continue
        match = re.match(r"([^=:\s]+)\s*[=:]\s*(.*)$", line)
        if not match:
            raise ValueError(f"{what}={path}: line {number} is not key=value")
        properties[match.group(1)] = match.group(2).strip()
    return properties


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
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ssl_ca: str | None = None  # a CA file turns TLS on (server certificate and host name verified)
    ssl_cert: str | None = None  # with ssl_key: a client certificate (mutual TLS)
    ssl_key: str | None = None
    ssl_key_password: str | None = field(default=None, repr=False)
    local_dc: str | None = None
    consistency: str = "LOCAL_QUORUM"  # of every statement (the writes, and verify's reads)

    @property
    def secrets(self) -> tuple[str, ...]:
        return tuple(s for s in (self.password, self.ssl_key_password) if s)


@dataclass(frozen=True)
class HttpAuth:
    """Basic auth and TLS trust of an HTTP edge (Kafka Connect REST, schema registry)."""
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca: str | None = None  # CA file for https; None: the system's trust store

    def requests_kwargs(self) -> dict:
        kwargs: dict = {"verify": self.ca or True}
        if self.username is not None:
            kwargs["auth"] = (self.username, self.password or "")
        return kwargs


@dataclass(frozen=True)
class KafkaSettings:
    """Bootstrap servers and the user's librdkafka client properties (security.protocol, sasl.*, ssl.*)."""
    bootstrap: str
    properties: Mapping[str, str] = field(default_factory=dict, repr=False)
    source: str = ""  # where the properties came from, for error messages

    def with_overrides(self, pairs: dict[str, str], *, bootstrap: str | None = None) -> KafkaSettings:
        props = {**self.properties, **pairs}
        source = " and ".join(p for p in (self.source, "--kafka-config" if pairs else "") if p)
        return KafkaSettings(bootstrap or self.bootstrap, props, source)

    @property
    def secrets(self) -> tuple[str, ...]:
        return tuple(v for k, v in self.properties.items() if v and _is_secret(k))


def _is_secret(key: str) -> bool:
    from cdc_consumer.secrets import is_secret

    return is_secret(key)


def _kafka(env: Mapping[str, str]) -> KafkaSettings:
    path = env.get("CDC_KAFKA_CONFIG", "")
    properties = read_properties(path) if path else {}
    file_bootstrap = properties.pop("bootstrap.servers", None)
    bootstrap = env.get("CDC_KAFKA_BOOTSTRAP") or file_bootstrap or f"127.0.0.1:{_port(env, 'CDC_KAFKA_PORT')}"
    return KafkaSettings(bootstrap, properties, f"CDC_KAFKA_CONFIG={path}" if path else "")


def _http_auth(env: Mapping[str, str], prefix: str) -> HttpAuth:
    return HttpAuth(env.get(f"{prefix}_USERNAME") or None, env.get(f"{prefix}_PASSWORD") or None,
                    _readable_file(env, f"{prefix}_CA"))


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
    kafka: KafkaSettings | None = None
    connect_auth: HttpAuth = HttpAuth()
    registry_auth: HttpAuth = HttpAuth()

    @property
    def kafka_client(self) -> KafkaSettings:
        """The Kafka client settings: the loaded ones (`from_env` always loads them), else bare bootstrap servers."""
        return self.kafka or KafkaSettings(self.kafka_bootstrap)

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every secret value these settings hold (for tests and redaction)."""
        values = [self.postgres.password, self.connect_auth.password, self.registry_auth.password,
                  *self.cassandra.secrets, *(self.kafka.secrets if self.kafka else ())]
        return tuple(v for v in values if v)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        pg_port = _port(env, "CDC_PG_PORT")
        registry_url = (env.get("CDC_SCHEMA_REGISTRY_URL")
                        or f"http://127.0.0.1:{_port(env, 'CDC_REGISTRY_PORT')}{REGISTRY_CCOMPAT_PATH}")
        hosts = tuple(h.strip() for h in env.get("CDC_CASSANDRA_HOSTS", "127.0.0.1").split(",") if h.strip())
        kafka = _kafka(env)
        cert, key = _readable_file(env, "CDC_CASSANDRA_SSL_CERT"), _readable_file(env, "CDC_CASSANDRA_SSL_KEY")
        if bool(cert) != bool(key):
            raise ValueError("CDC_CASSANDRA_SSL_CERT and CDC_CASSANDRA_SSL_KEY go together (mutual TLS)")
        return cls(
            postgres=PostgresSettings(
                dsn=env.get("CDC_PG_DSN") or f"postgresql://cdc@127.0.0.1:{pg_port}/cdc",
                password=env.get("CDC_PG_PASSWORD") or None,
            ),
            kafka_bootstrap=kafka.bootstrap,
            connect_url=env.get("CDC_CONNECT_URL") or f"http://127.0.0.1:{_port(env, 'CDC_CONNECT_PORT')}",
            schema_registry_url=registry_url,
            registry_api_url=env.get("CDC_REGISTRY_API_URL") or _registry_api_url(registry_url),
            cassandra=CassandraSettings(
                hosts=hosts or ("127.0.0.1",),
                port=_port(env, "CDC_CASSANDRA_PORT"),
                keyspace=env.get("CDC_CASSANDRA_KEYSPACE", "market"),
                protocol_version=_protocol_version(env),
                username=env.get("CDC_CASSANDRA_USERNAME") or None,
                password=env.get("CDC_CASSANDRA_PASSWORD") or None,
                ssl_ca=_readable_file(env, "CDC_CASSANDRA_SSL_CA"),
                ssl_cert=cert,
                ssl_key=key,
                ssl_key_password=env.get("CDC_CASSANDRA_SSL_KEY_PASSWORD") or None,
                local_dc=env.get("CDC_CASSANDRA_LOCAL_DC") or None,
                consistency=_consistency(env),
            ),
            prometheus_url=env.get("CDC_PROMETHEUS_URL")
            or f"http://127.0.0.1:{_port(env, 'CDC_PROMETHEUS_PORT')}",
            alertmanager_url=env.get("CDC_ALERTMANAGER_URL")
            or f"http://127.0.0.1:{_port(env, 'CDC_ALERTMANAGER_PORT')}",
            kafka=kafka,
            connect_auth=_http_auth(env, "CDC_CONNECT"),
            registry_auth=_http_auth(env, "CDC_SCHEMA_REGISTRY"),
        )
