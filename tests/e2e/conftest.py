"""The private pipeline of each end-to-end test (database, connector, topics, keyspace, group)."""

from __future__ import annotations

import psycopg
import pytest
from confluent_kafka.admin import AdminClient

from cdc_consumer import schema
from tests.e2e.pipeline import Pipeline


@pytest.fixture()
def pipeline(pg_database, cassandra_session, kafka_bootstrap, connect_url, tmp_path):
    with psycopg.connect(pg_database) as conn:
        schema.apply_sql(conn)
    schema.apply_cql(cassandra_session, cassandra_session.keyspace)
    p = Pipeline(pg_database, cassandra_session.keyspace, tmp_path)
    p.register()
    yield p
    p.stop_consumers()
    p.delete_connector()
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    topics = [t for t in admin.list_topics(timeout=10).topics if t.startswith(f"{p.prefix}.")]
    if topics:
        admin.delete_topics(topics)
