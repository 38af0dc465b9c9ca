"""Shared click options: every connection option reads its CDC_* variable, defaulting to the local stack."""

from __future__ import annotations

import dataclasses
import functools

import click

from cdc_consumer.config import CassandraSettings, KafkaSettings, PostgresSettings, Settings


def settings() -> Settings:
    """Settings from the environment; a bad variable is a usage error naming it."""
    try:
        return Settings.from_env()
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc


def valid_dsn(ctx, param, value: str) -> str:
    """A usage error, never a traceback, for a DSN libpq cannot parse; its text is never shown."""
    from cdc_consumer.pg import InvalidDsn, check_dsn

    try:
        return check_dsn(value)
    except InvalidDsn as exc:
        raise click.BadParameter(f"{exc} (from --pg-dsn or CDC_PG_DSN)") from None


def pg_dsn_option(f):
    return click.option("--pg-dsn", envvar="CDC_PG_DSN", default=lambda: settings().postgres.dsn,
                        show_default="CDC_PG_DSN or postgresql://cdc@127.0.0.1:5432/cdc", callback=valid_dsn,
                        help="PostgreSQL connection string (password via CDC_PG_PASSWORD).")(f)


def kafka_option(f):
    """`--bootstrap` and a repeatable `--kafka-config key=value` (on top of the CDC_KAFKA_CONFIG file); the
    command receives them as one validated `kafka: KafkaSettings`."""

    @functools.wraps(f)
    def with_kafka(*args, bootstrap: str, kafka_config: tuple[str, ...], **kwargs):
        return f(*args, kafka=kafka_settings(bootstrap, kafka_config), **kwargs)

    with_kafka = click.option("--kafka-config", "kafka_config", multiple=True, metavar="KEY=VALUE",
                              help="librdkafka client property on top of the CDC_KAFKA_CONFIG file (repeatable), "
                                   "e.g. security.protocol=SASL_SSL.")(with_kafka)
    return click.option("--bootstrap", envvar="CDC_KAFKA_BOOTSTRAP", default=lambda: settings().kafka_bootstrap,
                        show_default="CDC_KAFKA_BOOTSTRAP or 127.0.0.1:9092", help="Kafka bootstrap servers.")(with_kafka)


def kafka_settings(bootstrap: str, pairs: tuple[str, ...] = ()) -> KafkaSettings:
    """The environment's Kafka settings with --bootstrap and --kafka-config applied, checked by librdkafka."""
    from cdc_consumer import kafka_clients

    try:
        base = settings().kafka or KafkaSettings(bootstrap)
        kafka = base.with_overrides(kafka_clients.parse_pairs(pairs), bootstrap=bootstrap)
        kafka_clients.validate(kafka)
    except kafka_clients.KafkaConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    return kafka


def connect_client(connect_url: str, **kwargs):
    """A Kafka Connect REST client for --connect-url with the environment's basic auth and CA."""
    from connectors.connect_client import ConnectClient

    return ConnectClient(connect_url, auth=settings().connect_auth, **kwargs)


def registry_client(registry: str):
    """A schema registry client for --registry with the environment's basic auth and CA."""
    from cdc_consumer.schema_registry import RegistryClient

    return RegistryClient(registry, auth=settings().registry_auth)


def connect_url_option(f):
    return click.option("--connect-url", envvar="CDC_CONNECT_URL", default=lambda: settings().connect_url,
                        show_default="CDC_CONNECT_URL or http://127.0.0.1:8083", help="Kafka Connect REST URL.")(f)


def registry_option(f):
    return click.option("--registry", envvar="CDC_SCHEMA_REGISTRY_URL",
                        default=lambda: settings().schema_registry_url,
                        show_default="CDC_SCHEMA_REGISTRY_URL or http://127.0.0.1:8081/apis/ccompat/v7",
                        help="Confluent-compatible schema registry URL.")(f)


def alertmanager_option(f):
    return click.option("--alertmanager-url", envvar="CDC_ALERTMANAGER_URL",
                        default=lambda: settings().alertmanager_url,
                        show_default="CDC_ALERTMANAGER_URL or http://127.0.0.1:9095", help="Alertmanager URL.")(f)


def cassandra_options(f):
    f = click.option("--cassandra-keyspace", envvar="CDC_CASSANDRA_KEYSPACE",
                     default=lambda: settings().cassandra.keyspace, show_default="CDC_CASSANDRA_KEYSPACE or market",
                     help="Cassandra keyspace.")(f)
    f = click.option("--cassandra-hosts", envvar="CDC_CASSANDRA_HOSTS",
                     default=lambda: ",".join(settings().cassandra.hosts),
                     show_default="CDC_CASSANDRA_HOSTS or 127.0.0.1", help="Comma-separated Cassandra contact points.")(f)
    return f


def postgres_settings(pg_dsn: str) -> PostgresSettings:
    """PostgreSQL settings for a --pg-dsn value (the password still only from CDC_PG_PASSWORD)."""
    return PostgresSettings(pg_dsn, settings().postgres.password)


def cassandra_settings(cassandra_hosts: str, cassandra_keyspace: str) -> CassandraSettings:
    """Cassandra settings for --cassandra-hosts / --cassandra-keyspace values (port, protocol, credentials,
    TLS, DC and consistency from the environment)."""
    base = settings().cassandra
    hosts = tuple(h.strip() for h in cassandra_hosts.split(",") if h.strip())
    return dataclasses.replace(base, hosts=hosts or base.hosts, keyspace=cassandra_keyspace)
