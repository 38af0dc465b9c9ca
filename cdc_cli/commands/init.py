"""`cdc init`: apply sql/ to PostgreSQL and cql/ to Cassandra (idempotent)."""

from __future__ import annotations

import click
from cassandra import DriverException
from cassandra.connection import ConnectionException
from cassandra.protocol import ErrorMessage
from confluent_kafka import KafkaException

from cdc_cli.commands.options import (
    cassandra_options,
    cassandra_settings,
    kafka_option,
    pg_dsn_option,
    postgres_settings,
)
from cdc_consumer import cql_session, kafka_clients, pg, schema
from cdc_consumer.config import KafkaSettings
from cdc_consumer.dlq import DEFAULT_TOPIC_TEMPLATE, dlq_topic
from cdc_consumer.identifiers import InvalidIdentifier, validate_identifier
from cdc_consumer.secrets import redact

# The tables of the publication (sql/): Debezium writes each to <prefix>.public.<table>.
SOURCE_TABLES = ("ticker_24h", "klines", "order_book", "trades")


@click.command()
@pg_dsn_option
@cassandra_options
@kafka_option
@click.option("--skip-postgres", is_flag=True, help="Do not touch PostgreSQL.")
@click.option("--skip-cassandra", is_flag=True, help="Do not touch Cassandra.")
@click.option("--skip-kafka", is_flag=True, help="Do not create the Kafka topics.")
@click.option("--cassandra-replication", envvar="CDC_CASSANDRA_REPLICATION", default=None,
              help="Keyspace replication map (default NetworkTopologyStrategy, RF min(3, nodes) in the local DC).")
@click.option("--topic-prefix", envvar="CDC_TOPIC_PREFIX", default="cdc", show_default=True,
              help="The connector's topic prefix: <prefix>.public.<table> and their DLQ topics are created.")
@click.option("--topic-partitions", envvar="CDC_TOPIC_PARTITIONS", type=click.IntRange(1, 1000), default=3,
              show_default=True, help="Partitions of the connector's topics (DLQ topics get 1).")
def init(pg_dsn: str, cassandra_hosts: str, cassandra_keyspace: str, kafka: KafkaSettings, skip_postgres: bool,
         skip_cassandra: bool, skip_kafka: bool, cassandra_replication: str | None, topic_prefix: str,
         topic_partitions: int) -> None:
    """Create the PostgreSQL tables/publication, the Cassandra keyspace/tables and the Kafka topics
    (replication factor min(3, brokers), min.insync.replicas 2 at 3). Safe to re-run."""
    try:
        if not skip_postgres:
            with pg.connect(postgres_settings(pg_dsn)) as conn:
                files = schema.apply_sql(conn)
            click.echo(f"postgres: applied {', '.join(files) or 'nothing (sql/ is empty)'}")
        if not skip_cassandra:
            cfg = cassandra_settings(cassandra_hosts, cassandra_keyspace)
            cluster, session = cql_session.connect(cfg)
            try:
                replication = cassandra_replication or schema.default_replication(cluster.metadata.all_hosts(),
                                                                                 cfg.local_dc)
                count = schema.apply_cql(session, cassandra_keyspace, replication)
            except (DriverException, ConnectionException, ErrorMessage) as exc:  # refused DDL, no schema agreement
                raise click.ClickException(f"Cassandra at {','.join(cfg.hosts)}: applying the schema failed: "
                                           f"{redact(cql_session.reason(exc), cfg.secrets)}") from None
            finally:
                cluster.shutdown()
            click.echo(f"cassandra: keyspace {cassandra_keyspace}: {count} statements applied")
        if not skip_kafka:
            _create_topics(kafka, topic_prefix, topic_partitions)
    except (pg.ServiceUnavailable, kafka_clients.KafkaUnavailable) as exc:
        raise click.ClickException(str(exc)) from exc
    except (InvalidIdentifier, ValueError) as exc:
        raise click.UsageError(str(exc)) from exc


def _create_topics(kafka: KafkaSettings, prefix: str, partitions: int) -> None:
    """The connector's topics and their DLQ topics, replicated for the brokers the cluster has."""
    validate_identifier(prefix.replace("-", "_").replace(".", "_"), what="topic prefix")
    brokers = len(kafka_clients.probe(kafka).brokers)
    topics = [f"{prefix}.public.{table}" for table in SOURCE_TABLES]
    client = kafka_clients.admin(kafka)
    factor, configs = kafka_clients.replication_for(brokers)
    try:
        outcome = kafka_clients.ensure_topics(client, topics, partitions=partitions, replication=factor,
                                              configs=configs)
        outcome |= kafka_clients.ensure_topics(client, [dlq_topic(DEFAULT_TOPIC_TEMPLATE, t) for t in topics],
                                               partitions=1, replication=factor, configs=configs)
    except KafkaException as exc:
        raise kafka_clients.KafkaUnavailable(f"Kafka at {kafka.bootstrap}: creating topics failed: "
                                             f"{redact(str(exc), kafka.secrets)}") from None
    created = sum(1 for state in outcome.values() if state == "created")
    click.echo(f"kafka: {len(outcome)} topics ({created} created, {len(outcome) - created} existed), "
               f"replication factor {factor} of {brokers} broker(s)"
               + (f", min.insync.replicas {configs['min.insync.replicas']}" if configs else ""))
