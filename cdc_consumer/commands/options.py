"""Shared click options: every connection option reads its CDC_* variable, defaulting to the local stack."""

from __future__ import annotations

import click

from cdc_consumer.config import CassandraSettings, PostgresSettings, Settings


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
    return click.option("--bootstrap", envvar="CDC_KAFKA_BOOTSTRAP", default=lambda: settings().kafka_bootstrap,
                        show_default="CDC_KAFKA_BOOTSTRAP or 127.0.0.1:9092", help="Kafka bootstrap servers.")(f)


def connect_url_option(f):
    return click.option("--connect-url", envvar="CDC_CONNECT_URL", default=lambda: settings().connect_url,
                        show_default="CDC_CONNECT_URL or http://127.0.0.1:8083", help="Kafka Connect REST URL.")(f)


def registry_option(f):
    return click.option("--registry", envvar="CDC_SCHEMA_REGISTRY_URL",
                        default=lambda: settings().schema_registry_url,
                        show_default="CDC_SCHEMA_REGISTRY_URL or http://127.0.0.1:8081",
                        help="Confluent-compatible schema registry URL.")(f)


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
    """Cassandra settings for --cassandra-hosts / --cassandra-keyspace values (port and protocol from env)."""
    base = settings().cassandra
    hosts = tuple(h.strip() for h in cassandra_hosts.split(",") if h.strip())
    return CassandraSettings(hosts or base.hosts, base.port, cassandra_keyspace, base.protocol_version)
