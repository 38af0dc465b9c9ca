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


def test_alertmanager_url_follows_its_port_unless_given():
    assert Settings.from_env({}).alertmanager_url == "http://127.0.0.1:9095"
    assert Settings.from_env({"CDC_ALERTMANAGER_PORT": "14095"}).alertmanager_url == "http://127.0.0.1:14095"
    assert Settings.from_env({"CDC_ALERTMANAGER_PORT": "14095", "CDC_ALERTMANAGER_URL": "http://am:9093"}
                             ).alertmanager_url == "http://am:9093"
