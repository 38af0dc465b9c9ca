"""Replication and consistency arithmetic of clusters (issue 13): pure functions, literal expectations."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from cdc_consumer.kafka_clients import replication_for
from cdc_consumer.schema import default_replication
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
