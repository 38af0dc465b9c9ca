"""Replication and consistency arithmetic of clusters (issue 13): pure functions, literal expectations."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from cassandra.connection import ConnectionException

from cdc_consumer.kafka_clients import replication_for
from cdc_consumer.schema import default_replication, use_keyspace
from connectors.health import ClusterHealth, NodeHealth, _cluster_problems, required_replicas


@pytest.mark.parametrize(("brokers", "expected"), [
    (1, (1, {})), (2, (2, {})), (3, (3, {"min.insync.replicas": "2"})), (5, (3, {"min.insync.replicas": "2"})),
])
def test_topic_replication_follows_the_broker_count(brokers, expected):
    assert replication_for(brokers) == expected


def hosts(*dcs: str | None):
    return [SimpleNamespace(datacenter=dc) for dc in dcs]


def test_keyspace_replication_is_network_topology_with_at_most_three_replicas():
    assert default_replication(hosts("datacenter1")) == "{'class': 'NetworkTopologyStrategy', 'datacenter1': 1}"
    assert default_replication(hosts(*["datacenter1"] * 3)) == \
        "{'class': 'NetworkTopologyStrategy', 'datacenter1': 3}"
    assert default_replication(hosts(*["dc1"] * 5, "dc2")) == "{'class': 'NetworkTopologyStrategy', 'dc1': 3}"
    assert default_replication(hosts("dc1", "dc2", "dc2"), local_dc="dc1") == \
        "{'class': 'NetworkTopologyStrategy', 'dc1': 1}"
    assert default_replication([]) == "{'class': 'SimpleStrategy', 'replication_factor': 1}"


def test_a_data_centre_name_that_could_break_the_map_is_refused():
    with pytest.raises(ValueError, match="data centre name"):
        default_replication(hosts("dc1'}; DROP"))


@pytest.mark.parametrize(("level", "rf", "needed"), [
    ("LOCAL_QUORUM", 3, 2), ("QUORUM", 3, 2), ("LOCAL_QUORUM", 1, 1), ("QUORUM", 5, 3),
    ("ONE", 3, 1), ("LOCAL_ONE", 3, 1), ("TWO", 3, 2), ("ALL", 3, 3),
])
def test_replicas_required_per_consistency_level(level, rf, needed):
    assert required_replicas(level, rf) == needed


def test_status_fails_only_when_the_consistency_cannot_be_met():
    nodes = [NodeHealth("127.0.0.1", "dc1", "rack1", True), NodeHealth("127.0.0.2", "dc1", "rack2", False),
             NodeHealth("127.0.0.3", "dc1", "rack3", True)]
    one_down = ClusterHealth("LOCAL_QUORUM", nodes, replication_factor=3, fewest_live_replicas=2, required_replicas=2)
    assert _cluster_problems(one_down) == []
    nodes[0].up = False
    two_down = ClusterHealth("LOCAL_QUORUM", nodes, replication_factor=3, fewest_live_replicas=1, required_replicas=2)
    assert _cluster_problems(two_down) == [
        "Cassandra cannot meet LOCAL_QUORUM: a token range has 1 of 3 replicas up, 2 needed "
        "(down: 127.0.0.1, 127.0.0.2)"]
    unwritable = ClusterHealth("ONE", brokers=[1], unwritable=["t[0] has 1 in-sync replica(s), needs 2"])
    assert _cluster_problems(unwritable) == ["Kafka partition t[0] has 1 in-sync replica(s), needs 2: acks=all writes fail"]


class KeyspaceNotYetEverywhere:
    """A session whose nodes learn of a new keyspace only after `refusals` USE attempts (schema propagation)."""

    def __init__(self, refusals: int, message: str = "Keyspace 'ks' does not exist") -> None:
        self.refusals, self.message, self.attempts = refusals, message, 0

    def set_keyspace(self, keyspace: str) -> None:
        self.attempts += 1
        if self.attempts <= self.refusals:
            raise ConnectionException(f"Failed to set keyspace on all hosts: [InvalidRequest('{self.message}')]")


def test_a_keyspace_not_yet_on_every_node_is_used_once_the_schema_has_spread():
    session = KeyspaceNotYetEverywhere(refusals=2)
    use_keyspace(session, "ks", timeout=30)
    assert session.attempts == 3


def test_a_keyspace_that_never_spreads_fails_at_the_deadline():
    session = KeyspaceNotYetEverywhere(refusals=10**6)
    with pytest.raises(ConnectionException, match="does not exist"):
        use_keyspace(session, "ks", timeout=0)
    assert session.attempts == 1


def test_other_keyspace_errors_are_not_retried():
    session = KeyspaceNotYetEverywhere(refusals=5, message="Unauthorized")
    with pytest.raises(ConnectionException, match="Unauthorized"):
        use_keyspace(session, "ks", timeout=30)
    assert session.attempts == 1
