"""Client security settings: credentials apart and never in reprs, Kafka properties files, URL credentials."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from cdc_cli.cli import main
from cdc_consumer import kafka_clients
from cdc_consumer.config import HttpAuth, KafkaSettings, Settings
from cdc_consumer.secrets import MASK, is_secret, mask_url, redact, split_url_credentials
from connectors.connect_client import ConnectClient

# The format Confluent Cloud's "librdkafka" snippet hands out (comments, blank lines, `=` in values).
CLOUD_PROPERTIES = """\
# Required connection configs for Kafka producer, consumer, and admin
bootstrap.servers=pkc-00000.europe-west1.gcp.confluent.cloud:9092
security.protocol=SASL_SSL
sasl.mechanisms=PLAIN
sasl.username=ABCDEFGHIJKLMNOP
sasl.password=s3cr3t/Pass=word+XYZ

# Best practice for higher availability in librdkafka clients prior to 1.7
session.timeout.ms=45000
"""


def _file(tmp_path, text: str, name: str = "client.properties") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_a_cloud_properties_file_is_read_whole_and_its_bootstrap_used(tmp_path):
    s = Settings.from_env({"CDC_KAFKA_CONFIG": _file(tmp_path, CLOUD_PROPERTIES)})
    assert s.kafka_bootstrap == "pkc-00000.europe-west1.gcp.confluent.cloud:9092"
    assert dict(s.kafka.properties) == {"security.protocol": "SASL_SSL", "sasl.mechanisms": "PLAIN",
                                        "sasl.username": "ABCDEFGHIJKLMNOP", "sasl.password": "s3cr3t/Pass=word+XYZ",
                                        "session.timeout.ms": "45000"}
    assert s.kafka.secrets == ("s3cr3t/Pass=word+XYZ",)
    assert "s3cr3t" not in repr(s)


def test_cdc_kafka_bootstrap_wins_over_the_file(tmp_path):
    s = Settings.from_env({"CDC_KAFKA_CONFIG": _file(tmp_path, CLOUD_PROPERTIES), "CDC_KAFKA_BOOTSTRAP": "b:1"})
    assert s.kafka.bootstrap == "b:1"


def test_a_missing_properties_file_names_the_variable(tmp_path):
    with pytest.raises(ValueError, match=r"CDC_KAFKA_CONFIG=.*nope.properties: cannot read"):
        Settings.from_env({"CDC_KAFKA_CONFIG": str(tmp_path / "nope.properties")})


def test_librdkafka_accepts_the_cloud_properties_and_names_an_unknown_key(tmp_path):
    good = Settings.from_env({"CDC_KAFKA_CONFIG": _file(tmp_path, CLOUD_PROPERTIES)}).kafka
    kafka_clients.validate(good)  # librdkafka knows every key of the cloud file
    bad = good.with_overrides({"ssl.truststore.location": "/x.jks"})  # a Java client property
    with pytest.raises(kafka_clients.KafkaConfigError,
                       match=r"property 'ssl.truststore.location': Java TrustStores") as raised:
        kafka_clients.validate(bad)
    assert "--kafka-config" in str(raised.value) and "s3cr3t" not in str(raised.value)
    jaas = good.with_overrides({"sasl.jaas.config": "x required;"})  # refused by librdkafka without naming it
    with pytest.raises(kafka_clients.KafkaConfigError, match=r"property 'sasl.jaas.config': Java JAAS"):
        kafka_clients.validate(jaas)


def test_every_client_gets_the_user_properties_on_top():
    kafka = KafkaSettings("h:1", {"security.protocol": "SASL_SSL", "session.timeout.ms": "45000"})
    config = kafka_clients.client_config(kafka, {"group.id": "g", "session.timeout.ms": 10000})
    assert config == {"bootstrap.servers": "h:1", "group.id": "g", "security.protocol": "SASL_SSL",
                      "session.timeout.ms": "45000"}


def test_cli_kafka_config_unknown_key_is_a_usage_error_naming_it():
    result = CliRunner().invoke(main, ["decode", "--topic", "t", "--bootstrap", "127.0.0.1:1",
                                       "--kafka-config", "no.such.property=1"])
    assert result.exit_code == 2
    assert "unknown property 'no.such.property'" in result.output
    assert "Traceback" not in result.output


def test_register_connector_takes_kafka_config_like_the_other_verbs():
    result = CliRunner().invoke(main, ["register-connector", "--bootstrap", "127.0.0.1:1",
                                       "--kafka-config", "no.such.property=1"])
    assert result.exit_code == 2
    assert "unknown property 'no.such.property'" in result.output
    assert "Traceback" not in result.output


def test_cli_kafka_config_without_equals_is_a_usage_error():
    result = CliRunner().invoke(main, ["status", "--kafka-config", "security.protocol"])
    assert result.exit_code == 2 and "expected key=value" in result.output


def test_cassandra_credentials_tls_and_consistency(tmp_path):
    ca = _file(tmp_path, "x", "ca.pem")
    s = Settings.from_env({"CDC_CASSANDRA_USERNAME": "cdc", "CDC_CASSANDRA_PASSWORD": "p4ss-word",
                           "CDC_CASSANDRA_SSL_CA": ca, "CDC_CASSANDRA_LOCAL_DC": "dc1"})
    c = s.cassandra
    assert (c.username, c.password, c.ssl_ca, c.local_dc, c.consistency) == ("cdc", "p4ss-word", ca, "dc1",
                                                                          "LOCAL_QUORUM")
    assert "p4ss-word" not in repr(s) and "p4ss-word" in s.secrets
    assert Settings.from_env({"CDC_CASSANDRA_CONSISTENCY": "one"}).cassandra.consistency == "ONE"
    with pytest.raises(ValueError, match="CDC_CASSANDRA_CONSISTENCY='MOST'"):
        Settings.from_env({"CDC_CASSANDRA_CONSISTENCY": "most"})


def test_missing_ca_files_and_half_a_client_certificate_are_named(tmp_path):
    with pytest.raises(ValueError, match="CDC_CASSANDRA_SSL_CA=/no/ca.pem: no such readable file"):
        Settings.from_env({"CDC_CASSANDRA_SSL_CA": "/no/ca.pem"})
    with pytest.raises(ValueError, match="CDC_CONNECT_CA"):
        Settings.from_env({"CDC_CONNECT_CA": "/no/ca.pem"})
    with pytest.raises(ValueError, match="go together"):
        Settings.from_env({"CDC_CASSANDRA_SSL_CERT": _file(tmp_path, "x", "c.pem")})


def test_http_auth_of_connect_and_registry_stays_out_of_repr():
    s = Settings.from_env({"CDC_CONNECT_USERNAME": "admin", "CDC_CONNECT_PASSWORD": "c0nnect-pw",
                           "CDC_SCHEMA_REGISTRY_USERNAME": "sr", "CDC_SCHEMA_REGISTRY_PASSWORD": "sr-pw-1"})
    assert s.connect_auth.requests_kwargs() == {"verify": True, "auth": ("admin", "c0nnect-pw")}
    assert s.registry_auth.username == "sr"
    assert "c0nnect-pw" not in repr(s) and "sr-pw-1" not in repr(s)


def test_url_credentials_are_split_off_and_masked():
    assert split_url_credentials("https://u:p%40ss@h:8083/x") == ("https://h:8083/x", "u", "p@ss")
    assert split_url_credentials("http://h:1") == ("http://h:1", None, None)
    assert mask_url("https://u:pw1@h:8083") == f"https://u:{MASK}@h:8083"
    client = ConnectClient("https://admin:in-url-pw@127.0.0.1:1", auth=HttpAuth("other", "env-pw", None))
    assert client.url == "https://127.0.0.1:1" and client._auth_kwargs["auth"] == ("admin", "in-url-pw")
    assert "in-url-pw" not in client.url and "in-url-pw" not in repr(client)


def test_secret_keys_cover_every_edge():
    for key in ("database.password", "sasl.password", "ssl.key.password", "sasl.jaas.config",
                "basic.auth.user.info", "sslpassword", "ssl.keystore.password", "api.secret", "oauth.token"):
        assert is_secret(key), key
    for key in ("key.converter", "ssl.key.location", "sasl.username", "database.user", "ssl.ca.location"):
        assert not is_secret(key), key


def test_redact_replaces_every_secret_value():
    assert redact("user=a password=hunter2 again hunter2", ["hunter2", None, ""]) == \
        f"user=a password={MASK} again {MASK}"


def test_the_connector_password_can_be_a_connect_file_reference():
    from connectors.config import load_template, render

    ref = "${file:/state/secure/pg.properties:password}"
    config = render(load_template(), {"CDC_PG_PASSWORD": "pg-pw-1", "CDC_CONNECTOR_PG_PASSWORD": ref,
                                      "CDC_PG_SSLMODE": "verify-full", "CDC_PG_SSLROOTCERT": "/ca.crt"}).config
    assert config["database.password"] == ref  # left for the worker's FileConfigProvider to resolve
    assert (config["database.sslmode"], config["database.sslrootcert"]) == ("verify-full", "/ca.crt")
    plain = render(load_template(), {"CDC_PG_PASSWORD": "pg-pw-1"}).config
    assert plain["database.password"] == "pg-pw-1" and "database.sslmode" not in plain


@pytest.fixture()
def guarded_registry():
    """A registry answering `GET /schemas/ids/1` only with basic auth reg-user / reg-pass-1."""
    import base64
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    expected = "Basic " + base64.b64encode(b"reg-user:reg-pass-1").decode()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            ok = self.headers.get("Authorization") == expected
            body = json.dumps({"schema": '"string"'} if ok else {"message": "Unauthorized"}).encode()
            self.send_response(200 if ok else 401)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_registry_basic_auth_from_the_url_or_the_environment(guarded_registry):
    from cdc_consumer.errors import RegistryUnavailable
    from cdc_consumer.schema_registry import RegistryClient

    assert RegistryClient(f"http://reg-user:reg-pass-1@{guarded_registry}").schema(1) == "string"
    env = Settings.from_env({"CDC_SCHEMA_REGISTRY_USERNAME": "reg-user", "CDC_SCHEMA_REGISTRY_PASSWORD": "reg-pass-1"})
    assert RegistryClient(f"http://{guarded_registry}", auth=env.registry_auth).schema(1) == "string"
    with pytest.raises(RegistryUnavailable, match="HTTP 401") as refused:
        RegistryClient(f"http://reg-user:wrong-pass-9@{guarded_registry}").schema(1)
    assert "wrong-pass-9" not in str(refused.value)


def test_consumer_settings_keep_kafka_secrets_out_of_repr():
    from cdc_consumer.consumer import ConsumerSettings

    settings = ConsumerSettings("h:1", kafka_config={"sasl.password": "k4fka-secret"})
    assert "k4fka-secret" not in repr(settings)
    assert settings.consumer_config()["sasl.password"] == "k4fka-secret"
