"""`cdc init`: apply sql/ to PostgreSQL and cql/ to Cassandra (idempotent)."""

from __future__ import annotations

import click

from cdc_cli.commands.options import cassandra_options, cassandra_settings, pg_dsn_option, postgres_settings
from cdc_consumer import cql_session, pg, schema
from cdc_consumer.identifiers import InvalidIdentifier


@click.command()
@pg_dsn_option
@cassandra_options
@click.option("--skip-postgres", is_flag=True, help="Do not touch PostgreSQL.")
@click.option("--skip-cassandra", is_flag=True, help="Do not touch Cassandra.")
@click.option("--cassandra-replication", envvar="CDC_CASSANDRA_REPLICATION", default=None,
              help="Keyspace replication map (default SimpleStrategy, RF 1).")
def init(pg_dsn: str, cassandra_hosts: str, cassandra_keyspace: str, skip_postgres: bool,
         skip_cassandra: bool, cassandra_replication: str | None) -> None:
    """Create the PostgreSQL tables/publication and the Cassandra keyspace/tables. Safe to re-run."""
    try:
        if not skip_postgres:
            with pg.connect(postgres_settings(pg_dsn)) as conn:
                files = schema.apply_sql(conn)
            click.echo(f"postgres: applied {', '.join(files) or 'nothing (sql/ is empty)'}")
        if not skip_cassandra:
            cluster, session = cql_session.connect(cassandra_settings(cassandra_hosts, cassandra_keyspace))
            try:
                count = schema.apply_cql(session, cassandra_keyspace, cassandra_replication)
            finally:
                cluster.shutdown()
            click.echo(f"cassandra: keyspace {cassandra_keyspace}: {count} statements applied")
    except pg.ServiceUnavailable as exc:
        raise click.ClickException(str(exc)) from exc
    except (InvalidIdentifier, ValueError) as exc:
        raise click.UsageError(str(exc)) from exc
