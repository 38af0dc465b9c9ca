"""Fixtures of the cluster tests (issue 13): a real 3 + 3 cluster started by the run itself, in a state
dir and on ports of its own, stopped at the end if this run started it.

The whole session talks to the cluster: the clients' environment replaces the open stack's in os.environ
(the `cdc` processes the e2e helpers start inherit it), and `settings` is read from it. A cluster that does
not start FAILS the tests, never skips them.
"""

from __future__ import annotations

import os
import sys

import pytest

from cdc_consumer.config import Settings
from tests.cluster.stack import ClusterStack
from tests.e2e.pipeline import Pipeline, assert_exit_zero, cdc
from tests.support import delete_pipeline_topics


@pytest.fixture(scope="session")
def cluster_stack():
    stack = ClusterStack()
    try:
        env = stack.up()
    except Exception as exc:  # noqa: BLE001 - any failure to start is the test run's failure
        pytest.fail(f"the 3 + 3 cluster did not start: {exc}", pytrace=False)
    print(f"\ncluster (3 Cassandra + 3 Kafka) ready in {stack.start_seconds:.1f}s (state {stack.state_dir})",
          file=sys.stderr)
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield stack
    finally:
        os.environ.clear()
        os.environ.update(saved)
        stack.down()


@pytest.fixture(scope="session")
def settings(cluster_stack) -> Settings:
    return Settings.from_env()


@pytest.fixture()
def cluster_pipeline(cluster_stack, pg_database, tmp_path):
    """A registered pipeline on the cluster: `cdc init` makes the keyspace (NetworkTopologyStrategy, RF 3)
    and the topics (RF 3, min.insync.replicas 2) before the connector is registered."""
    from tests.support import unique_name

    keyspace = unique_name("cl")
    p = Pipeline(pg_database, keyspace, tmp_path)
    init = cdc("init", "--pg-dsn", pg_database, "--cassandra-keyspace", keyspace, "--topic-prefix", p.prefix)
    assert init.returncode == 0, init.stdout + init.stderr
    replication = _keyspace_replication(keyspace)
    assert replication.get("class", "").endswith("NetworkTopologyStrategy") and replication.get("datacenter1") == "3", \
        replication
    from cdc_consumer.cql_session import connect

    cluster, session = connect(Settings.from_env().cassandra, keyspace=keyspace)
    p.session = session
    p.register()
    try:
        yield p
    finally:
        codes = p.stop_consumers()
        p.delete_connector()
        delete_pipeline_topics(os.environ["CDC_KAFKA_BOOTSTRAP"], p.prefix)
        session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}", timeout=120)
        cluster.shutdown()
        assert_exit_zero(codes)


def _keyspace_replication(keyspace: str) -> dict:
    from cdc_consumer.cql_session import connect

    cluster, session = connect(Settings.from_env().cassandra)
    try:
        row = session.execute("SELECT replication FROM system_schema.keyspaces WHERE keyspace_name = %s",
                              (keyspace,)).one()
        return dict(row.replication) if row else {}
    finally:
        cluster.shutdown()
