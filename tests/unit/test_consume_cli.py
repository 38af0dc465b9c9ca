"""`cdc consume` start-up: configuration problems are usage errors (exit 2) before any service is touched."""

from __future__ import annotations

from click.testing import CliRunner

from cdc_cli.cli import main


def run(*args: str):
    return CliRunner().invoke(main, ["consume", *args])


def test_a_bad_mapping_file_exits_2_listing_every_problem(tmp_path):
    mapping = tmp_path / "m.yaml"
    mapping.write_text("tables:\n  public.t:\n    targets:\n      - table: t\n        columns:\n"
                       "          a: {from: a, convert: nope}\n          'b;': b\n")
    result = run("--mapping", str(mapping))
    assert result.exit_code == 2
    assert "unknown conversion 'nope'" in result.output and "invalid Cassandra column 'b;'" in result.output


def test_a_missing_mapping_file_exits_2(tmp_path):
    result = run("--mapping", str(tmp_path / "absent.yaml"))
    assert result.exit_code == 2 and "cannot read mapping" in result.output


def test_a_dlq_template_without_the_topic_placeholder_exits_2():
    result = run("--dlq-topic", "dead-letters")
    assert result.exit_code == 2 and "must contain {topic}" in result.output


def test_an_invalid_keyspace_exits_2():
    result = run("--cassandra-keyspace", "market; DROP")
    assert result.exit_code == 2 and "invalid keyspace" in result.output


def test_help_lists_the_delivery_options():
    result = run("--help")
    assert result.exit_code == 0
    for option in ("--group", "--topics", "--mapping", "--format", "--metrics-port", "--log-format",
                   "--progress-every", "--batch-size", "--max-in-flight", "--from-beginning", "--on-truncate",
                   "--dlq-topic"):
        assert option in result.output


def test_cassandra_failing_while_statements_are_prepared_exits_1_naming_it_without_a_traceback():
    """Cassandra shutting down between connect and prepare (seen in the e2e outage test) is a named exit 1,
    not a driver traceback; a mapping that does not fit stays a usage error (exit 2)."""
    import click
    import pytest
    from cassandra import OperationTimedOut
    from cassandra.cluster import NoHostAvailable

    from cdc_cli.commands.consume import StartupError, _compile_against_live_tables
    from cdc_consumer.mapping import load_mapping

    class ShuttingDown:
        def execute(self, *args, **kwargs):
            raise NoHostAvailable("Unable to complete the operation against any hosts",
                                  {"127.0.0.1:9042": OperationTimedOut("Server is shutting down")})

    with pytest.raises(click.ClickException) as caught:
        _compile_against_live_tables(ShuttingDown(), "market", load_mapping(None))
    assert not isinstance(caught.value, StartupError) and caught.value.exit_code == 1
    assert caught.value.message.startswith("cassandra: ") and "preparing statements" in caught.value.message

    class NoTables:
        def execute(self, *args, **kwargs):
            return []

    with pytest.raises(StartupError, match="has no tables"):
        _compile_against_live_tables(NoTables(), "market", load_mapping(None))
