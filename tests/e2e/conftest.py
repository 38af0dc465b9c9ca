"""The `pipeline` fixture of the end-to-end tests: a registered private pipeline, torn down afterwards."""

from __future__ import annotations

import psycopg
import pytest

from cdc_consumer import schema
from tests.e2e.pipeline import Pipeline, assert_exit_zero
from tests.support import delete_pipeline_topics


@pytest.fixture()
def pipeline(request, pg_database, cassandra_session, kafka_bootstrap, connect_url, tmp_path):
    """A registered pipeline in JSON, or in the format a test parametrizes it with (indirect)."""
    fmt = getattr(request, "param", "json")
    if fmt == "avro":
        request.getfixturevalue("registry_url")
    with psycopg.connect(pg_database) as conn:
        schema.apply_sql(conn)
    schema.apply_cql(cassandra_session, cassandra_session.keyspace)
    p = Pipeline(pg_database, cassandra_session.keyspace, tmp_path, fmt=fmt, session=cassandra_session,
                 connect_url=connect_url)
    p.register()
    yield p
    codes = p.stop_consumers()
    p.delete_connector()
    delete_pipeline_topics(kafka_bootstrap, p.prefix)
    assert_exit_zero(codes)
