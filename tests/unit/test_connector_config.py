"""Connector templates, `${VAR}` substitution, overrides, secret masking and config diffs."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from cdc_cli.cli import main
from connectors.config import (
    AVRO_TEMPLATE,
    MASK,
    ConfigError,
    diff,
    is_secret,
    load_template,
    mask,
    parse_overrides,
    render,
    substitute,
    template_path,
)

DATA_TABLES = {"public.ticker_24h", "public.klines", "public.order_book", "public.trades"}
FORMAT_KEYS = {"key.converter", "value.converter", "key.converter.schemas.enable", "value.converter.schemas.enable",
               "key.converter.schema.registry.url", "value.converter.schema.registry.url"}


def default_config(env=None, **kwargs) -> dict[str, str]:
    return render(load_template(), env or {}, **kwargs).config


# --- the default template --------------------------------------------------------------------------

def test_default_template_captures_the_project_tables_through_pgoutput_and_the_project_publication():
    config = default_config()
    assert config["connector.class"] == "io.debezium.connector.postgresql.PostgresConnector"
    assert config["plugin.name"] == "pgoutput"
    assert (config["publication.name"], config["publication.autocreate.mode"]) == ("cdc_pub", "disabled")
    assert set(config["table.include.list"].split(",")) == DATA_TABLES
    assert (config["slot.name"], config["topic.prefix"]) == ("cdc_slot", "cdc")


def test_default_template_points_at_the_local_stack():
    config = default_config()
    assert (config["database.hostname"], config["database.port"]) == ("127.0.0.1", "5432")
    assert (config["database.user"], config["database.dbname"]) == ("cdc", "cdc")


def test_default_template_keeps_decimals_exact_and_emits_tombstones_and_truncates():
    config = default_config()
    assert config["decimal.handling.mode"] == "precise"
    assert config["tombstones.on.delete"] == "true"
    assert config["snapshot.mode"] == "initial"
    assert config["skipped.operations"] == "none"


def test_default_template_uses_json_with_schemas():
    config = default_config()
    for side in ("key", "value"):
        assert config[f"{side}.converter"] == "org.apache.kafka.connect.json.JsonConverter"
        assert config[f"{side}.converter.schemas.enable"] == "true"


def test_heartbeat_upserts_the_heartbeat_table_and_signals_come_from_the_signal_table():
    config = default_config()
    query = config["heartbeat.action.query"]
    assert query.startswith("INSERT INTO public.cdc_heartbeat") and "ON CONFLICT (id) DO UPDATE" in query
    assert int(config["heartbeat.interval.ms"]) > 0
    assert config["signal.data.collection"] == "public.cdc_signal"
    assert "source" in config["signal.enabled.channels"].split(",")


def test_snapshot_chunk_keys_are_bound_untyped_so_timestamptz_primary_keys_work():
    # Debezium binds the chunk boundary of a timestamptz key column as a string; typed as varchar,
    # PostgreSQL rejects `timestamptz <= varchar` and the incremental snapshot of klines/ticker_24h fails.
    assert default_config()["database.stringtype"] == "unspecified"


def test_default_template_is_tuned_for_low_latency():
    config = default_config()
    assert int(config["poll.interval.ms"]) <= 50
    assert int(config["max.queue.size"]) > int(config["max.batch.size"])


def test_environment_moves_database_slot_and_prefix():
    env = {"CDC_PG_HOST": "db.internal", "CDC_PG_PORT": "6543", "CDC_PG_USER": "dbz", "CDC_PG_DATABASE": "market",
           "CDC_SLOT_NAME": "slot_b", "CDC_TOPIC_PREFIX": "mkt", "CDC_CONNECTOR_NAME": "pg-b"}
    rendered = render(load_template(), env)
    assert rendered.name == "pg-b" and rendered.config["name"] == "pg-b"
    assert {k: rendered.config[k] for k in ("database.hostname", "database.port", "database.user",
                                            "database.dbname", "slot.name", "topic.prefix")} == {
        "database.hostname": "db.internal", "database.port": "6543", "database.user": "dbz",
        "database.dbname": "market", "slot.name": "slot_b", "topic.prefix": "mkt"}


def test_password_comes_from_the_environment_and_an_empty_one_is_left_out():
    assert default_config({"CDC_PG_PASSWORD": "pw-from-env"})["database.password"] == "pw-from-env"
    assert "database.password" not in default_config({})


# --- the Avro variant ------------------------------------------------------------------------------

APICURIO_CONVERTER = "io.apicurio.registry.utils.converter.AvroConverter"


def test_avro_template_uses_apicurios_converter_in_confluent_wire_format_with_the_registry_from_the_environment():
    config = render(load_template(template_path(AVRO_TEMPLATE)),
                    {"CDC_REGISTRY_API_URL": "http://registry.internal:8080/apis/registry/v2"}).config
    for side in ("key", "value"):
        assert config[f"{side}.converter"] == APICURIO_CONVERTER
        assert config[f"{side}.converter.apicurio.registry.url"] == "http://registry.internal:8080/apis/registry/v2"
        # Magic byte 0 + 4-byte content id, no headers: what cdc consume --format avro reads.
        assert config[f"{side}.converter.apicurio.registry.as-confluent"] == "true"
        assert config[f"{side}.converter.apicurio.registry.use-id"] == "contentId"
        assert config[f"{side}.converter.apicurio.registry.headers.enabled"] == "false"
        assert config[f"{side}.converter.apicurio.registry.auto-register"] == "true"
        assert f"{side}.converter.schemas.enable" not in config


def test_avro_template_defaults_the_registry_to_the_local_stack():
    config = render(load_template(template_path(AVRO_TEMPLATE)), {}).config
    assert config["value.converter.apicurio.registry.url"] == "http://127.0.0.1:8081/apis/registry/v2"


def test_avro_template_differs_from_the_default_only_in_its_converters():
    avro = render(load_template(template_path(AVRO_TEMPLATE)), {}).config
    json_config = default_config()
    assert all(c.key in FORMAT_KEYS or c.key.startswith(("key.converter.apicurio.", "value.converter.apicurio."))
               for c in diff(json_config, avro))


def test_register_with_both_config_and_format_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(main, ["register-connector", "--config", str(tmp_path / "c.json"), "--format", "avro"])
    assert result.exit_code == 2
    assert "--config and --format" in result.output


# --- substitution ----------------------------------------------------------------------------------

def test_required_variable_that_is_unset_is_an_error_naming_it_and_the_property():
    with pytest.raises(ConfigError, match=r"database.password: environment variable SECRET_PW is not set"):
        render({"name": "x", "config": {"connector.class": "C", "database.password": "${SECRET_PW}"}}, {})


def test_default_applies_when_the_variable_is_unset_or_empty_as_in_the_shell():
    assert substitute("${A:-fallback}", {}) == "fallback"
    assert substitute("${A:-fallback}", {"A": ""}) == "fallback"
    assert substitute("${A:-fallback}", {"A": "set"}) == "set"
    assert substitute("host-${A}:${B:-1}", {"A": "x"}) == "host-x:1"


def test_connect_config_provider_references_are_left_for_the_worker():
    value = "${file:/etc/cdc/pg.properties:password}"
    assert substitute(value, {}) == value


def test_overrides_apply_after_substitution_and_an_empty_value_removes_the_property():
    config = default_config(overrides=parse_overrides(["slot.name=t_slot", "heartbeat.action.query=",
                                                       "slot.drop.on.stop=true"]))
    assert config["slot.name"] == "t_slot"
    assert config["slot.drop.on.stop"] == "true"
    assert "heartbeat.action.query" not in config


def test_override_values_may_contain_equals_signs():
    assert parse_overrides(["transforms.x.regex=a=b"]) == {"transforms.x.regex": "a=b"}


@pytest.mark.parametrize("bad", ["database.password:hunter2", "=hunter2"])
def test_malformed_override_is_an_error_that_never_echoes_its_text(bad):
    with pytest.raises(ConfigError, match=r"--set argument 2 \(\d+ characters, not shown\) is not key=value") as caught:
        parse_overrides(["slot.name=x", bad])
    assert "hunter2" not in str(caught.value)


def test_name_option_wins_over_the_template_name():
    assert render(load_template(), {}, name="other").config["name"] == "other"


def test_numbers_and_booleans_become_connect_strings_and_other_values_are_rejected():
    config = render({"name": "x", "config": {"connector.class": "C", "tasks.max": 1, "flag": True}}, {}).config
    assert (config["tasks.max"], config["flag"]) == ("1", "true")
    with pytest.raises(ConfigError, match="table.include.list"):
        render({"name": "x", "config": {"connector.class": "C", "table.include.list": ["a"]}}, {})


def test_flat_config_maps_are_accepted(tmp_path):
    path = tmp_path / "flat.json"
    path.write_text(json.dumps({"name": "flat", "connector.class": "C", "slot.name": "s"}))
    rendered = render(load_template(path), {})
    assert rendered.name == "flat" and rendered.config == {"connector.class": "C", "slot.name": "s", "name": "flat"}


def test_unreadable_templates_are_errors_naming_the_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_template(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="bad.json is not valid JSON"):
        load_template(bad)


# --- secrets and diffs -----------------------------------------------------------------------------

@pytest.mark.parametrize("key", ["database.password", "key.converter.basic.auth.user.info",
                                 "producer.override.sasl.jaas.config", "ssl.key.password", "api.secret"])
def test_secret_properties_are_recognised(key):
    assert is_secret(key)


@pytest.mark.parametrize("key", ["key.converter", "key.converter.schemas.enable", "slot.name", "database.user"])
def test_ordinary_properties_are_not_secrets(key):
    assert not is_secret(key)


def test_mask_hides_secret_values_only():
    masked = mask({"database.password": "hunter2", "database.user": "cdc"})
    assert masked == {"database.password": MASK, "database.user": "cdc"}


def test_identical_configs_have_no_diff():
    assert diff(default_config(), default_config()) == []


def test_diff_lists_added_changed_and_removed_properties():
    old = {"a": "1", "b": "2", "c": "3"}
    new = {"a": "1", "b": "20", "d": "4"}
    lines = [c.describe() for c in diff(old, new)]
    assert lines == ["~ b: 2 -> 20", "- c (was 3)", "+ d = 4"]


def test_diff_of_a_secret_never_shows_its_values():
    old = default_config({"CDC_PG_PASSWORD": "old-secret"})
    new = default_config({"CDC_PG_PASSWORD": "new-secret"})
    [change] = diff(old, new)
    assert change.key == "database.password"
    assert change.describe() == f"database.password: {MASK} (changed)"
    assert "old-secret" not in change.describe() and "new-secret" not in change.describe()


# --- CLI input errors (no service needed) ----------------------------------------------------------

def test_register_with_a_malformed_override_is_a_usage_error():
    result = CliRunner().invoke(main, ["register-connector", "--set", "database.password:hunter2",
                                       "--connect-url", "http://127.0.0.1:9"])
    assert result.exit_code == 2
    assert "is not key=value" in result.output and "hunter2" not in result.output


def test_register_with_a_missing_config_file_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(main, ["register-connector", "--config", str(tmp_path / "nope.json")])
    assert result.exit_code == 2
    assert "nope.json does not exist" in result.output


def test_register_when_connect_is_unreachable_says_so_and_fails():
    # Port 9 (discard) has no HTTP server on loopback: the connection is refused.
    result = CliRunner().invoke(main, ["register-connector", "--connect-url", "http://127.0.0.1:9"])
    assert result.exit_code == 1
    assert "Kafka Connect unreachable at http://127.0.0.1:9" in result.output


def test_register_never_prints_the_password_when_connect_is_unreachable():
    result = CliRunner().invoke(main, ["register-connector", "--connect-url", "http://127.0.0.1:9"],
                                env={"CDC_PG_PASSWORD": "do-not-print-me"})
    assert "do-not-print-me" not in result.output


@pytest.mark.parametrize("table", ["klines", "public.klines;drop", "public.", "a.b.c", "public.1klines"])
def test_snapshot_rejects_table_names_that_are_not_schema_dot_identifier(table):
    result = CliRunner().invoke(main, ["snapshot", "--table", table, "--pg-dsn", "postgresql://127.0.0.1:9/x"])
    assert result.exit_code == 2
    assert repr(table) in result.output


def test_connect_rebalance_answers_are_retried_and_other_errors_are_not():
    """A 409, or a 500 whose body says a rebalance is expected (seen on GET /connectors/X/tasks), is Connect
    asking to retry; any other 500 is an error at once."""
    import requests

    from connectors.connect_client import _rebalancing

    def response(status: int, text: str) -> requests.Response:
        r = requests.Response()
        r.status_code, r._content = status, text.encode()
        return r

    assert _rebalancing(response(409, '{"message": "Cannot complete request momentarily due to stale config"}'))
    assert _rebalancing(response(500, '{"error_code":500,"message":"Request cannot be completed because a '
                                      'rebalance is expected"}'))
    assert not _rebalancing(response(500, '{"error_code":500,"message":"NullPointerException"}'))
    assert not _rebalancing(response(404, '{"message": "Connector x not found"}'))


CA_BUNDLE = "converter.apicurio.rest.request.ssl.ca-bundle.location"


def test_avro_converters_trust_the_registry_ca_given_for_the_connect_worker_or_else_the_clients_one():
    # Apicurio 2.6's client takes a PEM CA only under this key (its truststore.type must be a JDK KeyStore type).
    template = load_template(template_path(AVRO_TEMPLATE))
    worker = render(template, {"CDC_CONNECTOR_REGISTRY_CA": "/etc/connect/registry-ca.pem",
                               "CDC_SCHEMA_REGISTRY_CA": "/home/me/ca.pem"}).config
    client = render(template, {"CDC_SCHEMA_REGISTRY_CA": "/home/me/ca.pem"}).config
    for side in ("key", "value"):
        assert worker[f"{side}.{CA_BUNDLE}"] == "/etc/connect/registry-ca.pem"
        assert client[f"{side}.{CA_BUNDLE}"] == "/home/me/ca.pem"


def test_avro_converters_get_no_ca_property_on_an_open_registry():
    # An empty location would make the client open "" and fail; the property must be absent instead.
    config = render(load_template(template_path(AVRO_TEMPLATE)), {"CDC_CONNECTOR_REGISTRY_CA": ""}).config
    assert not [key for key in config if "ssl" in key]
