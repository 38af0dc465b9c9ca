import dataclasses

import pytest

from cdc_consumer.config import Settings


def test_defaults_point_at_the_local_stack():
    s = Settings.from_env({})
    assert s.postgres.dsn == "postgresql://cdc@127.0.0.1:5432/cdc"
    assert s.kafka_bootstrap == "127.0.0.1:9092"
    assert s.connect_url == "http://127.0.0.1:8083"
    assert s.cassandra.hosts == ("127.0.0.1",) and s.cassandra.keyspace == "market"


def test_port_variables_move_the_defaults_and_full_urls_win():
    s = Settings.from_env({"CDC_PG_PORT": "15432", "CDC_KAFKA_PORT": "19092",
                           "CDC_CONNECT_URL": "http://connect:8083"})
    assert s.postgres.dsn.endswith(":15432/cdc")
    assert s.kafka_bootstrap == "127.0.0.1:19092"
    assert s.connect_url == "http://connect:8083"


def test_password_is_kept_out_of_repr():
    s = Settings.from_env({"CDC_PG_PASSWORD": "hunter2"})
    assert "hunter2" not in repr(s)
    assert s.postgres.connect_kwargs()["password"] == "hunter2"


def test_a_bad_port_names_the_variable():
    with pytest.raises(ValueError, match="CDC_PG_PORT"):
        Settings.from_env({"CDC_PG_PORT": "nope"})


def test_cassandra_protocol_defaults_to_v4_and_is_configurable():
    assert Settings.from_env({}).cassandra.protocol_version == 4
    assert Settings.from_env({"CDC_CASSANDRA_PROTOCOL_VERSION": "5"}).cassandra.protocol_version == 5


def test_an_unknown_cassandra_protocol_names_the_variable():
    with pytest.raises(ValueError, match="CDC_CASSANDRA_PROTOCOL_VERSION='6'"):
        Settings.from_env({"CDC_CASSANDRA_PROTOCOL_VERSION": "6"})


def test_registry_default_is_apicurios_confluent_compatible_api_on_the_registry_port():
    assert Settings.from_env({}).schema_registry_url == "http://127.0.0.1:8081/apis/ccompat/v7"
    moved = Settings.from_env({"CDC_REGISTRY_PORT": "14081"})
    assert moved.schema_registry_url == "http://127.0.0.1:14081/apis/ccompat/v7"
    assert Settings.from_env({"CDC_SCHEMA_REGISTRY_URL": "http://sr:8081"}).schema_registry_url == "http://sr:8081"


def test_the_converters_registry_api_is_apicurios_v2_api_on_the_same_server():
    assert Settings.from_env({"CDC_REGISTRY_PORT": "14081"}).registry_api_url == "http://127.0.0.1:14081/apis/registry/v2"
    same_server = Settings.from_env({"CDC_SCHEMA_REGISTRY_URL": "http://registry:8080/apis/ccompat/v7/"})
    assert same_server.registry_api_url == "http://registry:8080/apis/registry/v2"
    explicit = Settings.from_env({"CDC_REGISTRY_API_URL": "http://elsewhere/apis/registry/v2"})
    assert explicit.registry_api_url == "http://elsewhere/apis/registry/v2"


def test_prometheus_url_follows_its_port_and_a_full_url_wins():
    assert Settings.from_env({}).prometheus_url == "http://127.0.0.1:9090"
    assert Settings.from_env({"CDC_PROMETHEUS_PORT": "13090"}).prometheus_url == "http://127.0.0.1:13090"
    assert Settings.from_env({"CDC_PROMETHEUS_URL": "http://prom:9090",
                              "CDC_PROMETHEUS_PORT": "13090"}).prometheus_url == "http://prom:9090"


def test_alertmanager_url_follows_its_port_unless_given():
    assert Settings.from_env({}).alertmanager_url == "http://127.0.0.1:9095"
    assert Settings.from_env({"CDC_ALERTMANAGER_PORT": "14095"}).alertmanager_url == "http://127.0.0.1:14095"
    assert Settings.from_env({"CDC_ALERTMANAGER_PORT": "14095", "CDC_ALERTMANAGER_URL": "http://am:9093"}
                             ).alertmanager_url == "http://am:9093"


def test_kafka_client_settings_are_the_loaded_ones_or_bare_bootstrap_servers():
    loaded = Settings.from_env({"CDC_KAFKA_PORT": "19092"})
    assert loaded.kafka_client is loaded.kafka
    assert loaded.kafka_client.bootstrap == "127.0.0.1:19092"
    bare = dataclasses.replace(loaded, kafka=None)
    assert bare.kafka_client.bootstrap == "127.0.0.1:19092" and dict(bare.kafka_client.properties) == {}
