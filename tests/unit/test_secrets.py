"""Secrets never shown (issue 15, Secrets): one rule for secret keys, URL and DSN credentials masked in
every message and in `cdc status --json`, malformed `--set` and unparsable DSNs reported without their text."""

from __future__ import annotations

import orjson
import pytest
from click.testing import CliRunner

from cdc_cli.cli import main
from cdc_consumer import pg
from cdc_consumer.config import PostgresSettings
from cdc_consumer.errors import RegistryUnavailable
from cdc_consumer.schema_registry import RegistryClient
from cdc_consumer.secrets import MASK, is_secret, mask_deep, mask_dsn, mask_text, mask_url
from connectors import config as connector_config
from connectors.connect_client import ConnectClient, ConnectUnavailable

SECRET = "hunter2"
CLOSED = "127.0.0.1:9"  # nothing listens on the discard port of loopback


def test_every_key_ending_in_a_secret_word_is_secret_for_the_whole_project():
    keys = ["sslpassword", "database.password", "database.sslpassword", "ssl.key.password",
            "ssl.truststore.password", "client_secret", "api.secret", "accessToken", "auth.token", "sasl.jaas.config",
            "producer.override.sasl.jaas.config", "basic.auth.user.info", "key.converter.basic.auth.user.info",
            "ssl.keystore.key", "api.key", "apikey", "aws.credentials", "PASSWORD", "db_pwd"]
    assert [key for key in keys if not is_secret(key)] == []
    assert [key for key in keys if not connector_config.is_secret(key)] == []  # connectors use the same rule
    ordinary = ["key.converter", "key.converter.schemas.enable", "slot.name", "database.user", "sslmode",
                "token.count.max", "passwords.allowed"]
    assert [key for key in ordinary if is_secret(key)] == []


def test_url_credentials_are_masked_and_nothing_else():
    shown = {
        f"http://admin:{SECRET}@connect:8083": f"http://admin:{MASK}@connect:8083",
        f"https://:{SECRET}@registry/apis/ccompat/v7": f"https://:{MASK}@registry/apis/ccompat/v7",
        f"http://registry:8081/x?token={SECRET}&a=1": f"http://registry:8081/x?token={MASK}&a=1",
        "http://127.0.0.1:8083": "http://127.0.0.1:8083",
        "http://user@host:1": "http://user@host:1",
    }
    assert {url: mask_url(url) for url in shown} == shown


def test_credentials_in_free_text_are_masked():
    text = f"failed: http://u:{SECRET}@a:1/x and https://v:{SECRET}2@b/ (see https://docs.example/a@b)"
    assert mask_text(text) == f"failed: http://u:{MASK}@a:1/x and https://v:{MASK}@b/ (see https://docs.example/a@b)"


@pytest.mark.parametrize("dsn", [f"postgresql://cdc:{SECRET}@db:5432/cdc?sslpassword={SECRET}",
                                 f"host=db user=cdc password={SECRET} sslpassword={SECRET}"])
def test_dsn_secrets_are_masked(dsn):
    shown = mask_dsn(dsn)
    assert SECRET not in shown and "host=db" in shown and MASK in shown


def test_an_unparsable_dsn_is_never_shown():
    assert mask_dsn(f"host='db password={SECRET}") == "<unparsable DSN>"
    with pytest.raises(pg.InvalidDsn) as caught:
        pg.connect(PostgresSettings(f"host='db password={SECRET}"))
    assert SECRET not in str(caught.value) and "cannot be parsed" in str(caught.value)


def test_a_document_is_masked_deeply():
    document = {"error": f"at http://a:{SECRET}@h:1", "config": {"database.password": SECRET, "n": 1},
                "list": [f"ftp://x:{SECRET}@y/"]}
    assert SECRET not in orjson.dumps(mask_deep(document)).decode()
    assert mask_deep(document)["config"]["n"] == 1


def test_connect_client_errors_mask_the_url_credentials():
    with pytest.raises(ConnectUnavailable) as caught:
        ConnectClient(f"http://admin:{SECRET}@{CLOSED}", timeout=2).plugins()
    # The credentials are split off the URL at once (basic auth): the message names the server only.
    assert SECRET not in str(caught.value) and f"unreachable at http://{CLOSED}" in str(caught.value)


def test_registry_errors_mask_the_url_credentials():
    with pytest.raises(RegistryUnavailable) as caught:
        RegistryClient(f"http://reader:{SECRET}@{CLOSED}", timeout=2).schema(1)
    assert SECRET not in str(caught.value) and f"schema registry http://{CLOSED} unreachable" in str(caught.value)


def test_status_json_never_shows_url_credentials():
    result = CliRunner().invoke(main, ["status", "--json", "--skip", "slot", "--skip", "consumer",
                                       "--skip", "cassandra", "--connect-url", f"http://admin:{SECRET}@{CLOSED}"])
    assert result.exit_code == 1
    assert SECRET not in result.output
    report = orjson.loads(result.output)
    assert f"unreachable at http://{CLOSED}" in report["connector"]["error"]


@pytest.mark.parametrize("verb", [["poll", "--once", "--symbols", "BTCUSDT"], ["status", "--json"],
                                  ["init"]])
def test_an_unparsable_dsn_is_a_usage_error_without_its_text(verb):
    result = CliRunner().invoke(main, [*verb, "--pg-dsn", f"host='db password={SECRET}"])
    assert result.exit_code == 2, result.output
    assert "cannot be parsed" in result.output and SECRET not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_poll_never_logs_the_exchange_credentials(caplog):
    result = CliRunner().invoke(main, ["poll", "--once", "--symbols", "BTCUSDT", "--klines", "", "--depth", "0",
                                       "--trades", "0", "--pg-dsn", f"postgresql://cdc@{CLOSED}/cdc",
                                       "--base-url", f"ftp://key:{SECRET}@exchange"])
    assert result.exit_code == 2
    assert SECRET not in result.output and SECRET not in caplog.text
