"""Service fixtures for integration tests.

They read the same CDC_* variables as the CLI (cdc_consumer.config.Settings). A service that cannot be
reached makes the test FAIL with a message naming it — never skip — so a green run always means the
real services were exercised. Start them with `make stack-up` (or run `make test`, which does).
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

import pytest

from cdc_consumer.config import Settings
from tests.support import delete_topics, unique_name, wait_until

IN_CI = os.environ.get("CI", "").lower() == "true"


def _reachable(host: str, port: int, timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _require(name: str, host: str, port: int) -> None:
    if not _reachable(host, port):
        pytest.fail(f"{name} is not reachable at {host}:{port} — start the stack with `make stack-up`",
                    pytrace=False)


@pytest.fixture(scope="session")
def settings() -> Settings:
    return Settings.from_env()


@pytest.fixture(scope="session")
def pg_dsn(settings: Settings) -> str:
    """DSN of the project database (role `cdc`)."""
    import psycopg

    try:
        with psycopg.connect(**settings.postgres.connect_kwargs(), connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not reachable at {settings.postgres.dsn}: {exc}", pytrace=False)
    return settings.postgres.dsn


@pytest.fixture()
def pg_database(pg_dsn: str, settings: Settings):
    """A fresh, empty database owned by the test role; dropped (with its replication slots) afterwards."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    name = unique_name("cdc_t")
    admin = psycopg.connect(**settings.postgres.connect_kwargs(), autocommit=True)
    admin.execute(f'CREATE DATABASE "{name}"')
    params = conninfo_to_dict(pg_dsn)
    params["dbname"] = name
    try:
        yield make_conninfo(**params)
    finally:
        # A deleted connector's walsender lets go of its slot a moment after the REST call returns.
        wait_until(lambda: not admin.execute("SELECT 1 FROM pg_replication_slots WHERE database = %s AND active",
                                             (name,)).fetchall(),
                   timeout=60, what=f"the replication slots of {name} to be released")
        for (slot,) in admin.execute("SELECT slot_name FROM pg_replication_slots WHERE database = %s",
                                     (name,)).fetchall():
            admin.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
        # FORCE may meet a backend it may not signal for a moment (e.g. one still leaving): retried.
        wait_until(lambda: admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)') is not None,
                   timeout=60, interval=1.0, what=f"PostgreSQL to drop database {name}")
        admin.close()


@pytest.fixture(scope="session")
def kafka_bootstrap(settings: Settings) -> str:
    from confluent_kafka.admin import AdminClient

    host, _, port = settings.kafka_bootstrap.split(",")[0].rpartition(":")
    _require("Kafka", host, int(port))
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    try:
        admin.list_topics(timeout=10)
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"Kafka at {settings.kafka_bootstrap} does not answer metadata: {exc}", pytrace=False)
    return settings.kafka_bootstrap


@pytest.fixture()
def kafka_topic(kafka_bootstrap: str):
    """A fresh topic name (created by the test as needed); deleted afterwards."""
    name = unique_name("t")
    yield name
    delete_topics(kafka_bootstrap, [name, f"{name}.dlq"])


@pytest.fixture(scope="session")
def connect_url(settings: Settings) -> str:
    import requests

    url = urlparse(settings.connect_url)
    _require("Kafka Connect", url.hostname or "127.0.0.1", url.port or 8083)
    plugins = wait_until(lambda: requests.get(f"{settings.connect_url}/connector-plugins", timeout=5).json(),
                         timeout=60, what="Kafka Connect REST API")
    classes = {p["class"] for p in plugins}
    if "io.debezium.connector.postgresql.PostgresConnector" not in classes:
        pytest.fail(f"Kafka Connect at {settings.connect_url} has no Debezium PostgreSQL plugin: {classes}",
                    pytrace=False)
    return settings.connect_url


@pytest.fixture(scope="session")
def cassandra_cluster(settings: Settings):
    from cdc_consumer.cql_session import cluster_for

    cfg = settings.cassandra
    _require("Cassandra", cfg.hosts[0], cfg.port)
    cluster = cluster_for(cfg)
    yield cluster
    cluster.shutdown()


@pytest.fixture()
def cassandra_session(cassandra_cluster):
    """A session on a fresh keyspace (SimpleStrategy, RF 1); the keyspace is dropped afterwards."""
    keyspace = unique_name("t")
    session = cassandra_cluster.connect()
    # After a test restarted Cassandra the shared Cluster reconnects within a second (its reconnection
    # policy); wait for that rather than failing the next test.
    wait_until(lambda: session.execute(f"CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = "
                                       "{'class': 'SimpleStrategy', 'replication_factor': 1}") is not None,
               timeout=60, what="Cassandra to accept CREATE KEYSPACE")
    session.set_keyspace(keyspace)
    try:
        yield session
    finally:
        # Slow under load (snapshot); right after a test restarted Cassandra the driver may still hold a
        # defunct connection for a moment, so the drop is retried like the create above.
        wait_until(lambda: session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}", timeout=120) is not None,
                   timeout=180, interval=1.0, what=f"Cassandra to drop keyspace {keyspace}")
        session.shutdown()


@pytest.fixture(scope="session")
def registry_url(settings: Settings, connect_url: str) -> str:
    """The Confluent-compatible API of the stack's Apicurio registry, with the Avro converter in Connect."""
    import requests

    url = urlparse(settings.schema_registry_url)
    _require("Schema registry (Apicurio)", url.hostname or "127.0.0.1", url.port or 8081)
    wait_until(lambda: requests.get(f"{settings.schema_registry_url}/subjects", timeout=5).ok,
               timeout=60, what="the schema registry's Confluent-compatible API")
    plugins = requests.get(f"{connect_url}/connector-plugins", params={"connectorsOnly": "false"}, timeout=10).json()
    if "io.apicurio.registry.utils.converter.AvroConverter" not in {p["class"] for p in plugins}:
        pytest.fail(f"Kafka Connect at {connect_url} has no Apicurio AvroConverter plugin (stack: connect)",
                    pytrace=False)
    return settings.schema_registry_url
