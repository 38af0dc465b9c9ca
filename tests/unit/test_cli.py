from click.testing import CliRunner

from cdc_cli.cli import main
from cdc_consumer import __version__


def test_version_prints_package_version():
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output


def test_unknown_verb_is_a_usage_error():
    result = CliRunner().invoke(main, ["no-such-verb"])
    assert result.exit_code == 2
    assert "no-such-verb" in result.output
