"""`cdc poll` and `cdc binance-sim`: bad input is a usage error (exit 2) with a message naming it."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from cdc_cli.cli import main
from cdc_cli.commands.ingest import parse_duration


def run(*args: str):
    return CliRunner().invoke(main, list(args))


@pytest.mark.parametrize("args, message", [
    (["poll", "--symbols", "BTCUSDT", "--no-such-option"], "No such option"),
    (["poll", "--symbols", ""], "no symbols given"),
    (["poll", "--symbols", " , ,"], "no symbols given"),
    (["poll"], "Missing option '--symbols'"),
    (["poll", "--symbols", "BTC USDT"], "invalid symbol 'BTC USDT'"),
    (["poll", "--symbols", "BTCUSDT", "--interval", "7x"], "'7x' is not a positive duration"),
    (["poll", "--symbols", "BTCUSDT", "--interval", "0s"], "'0s' is not a positive duration"),
    (["poll", "--symbols", "BTCUSDT", "--klines", "1m,7x"], "invalid kline interval(s) 7x"),
    (["poll", "--symbols", "BTCUSDT", "--depth", "6000"], "--depth"),
    (["poll", "--symbols", "BTCUSDT", "--weight-budget", "7000"], "--weight-budget"),
    (["binance-sim", "--host", "0.0.0.0"], "not a loopback address"),
    (["binance-sim", "--port", "70000"], "--port"),
    (["binance-sim", "--tick", "fast"], "'fast' is not a positive duration"),
    (["binance-sim", "--port", "0", "--fault", "{not json"], "--fault"),
    (["binance-sim", "--port", "0", "--fault", '{"status": 200}'], "400..599"),
])
def test_bad_input_exits_2_naming_the_problem(args, message):
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_base_url_must_be_http():
    result = run("poll", "--symbols", "BTCUSDT", "--once", "--base-url", "ftp://example")
    assert result.exit_code == 2
    assert "http://" in result.output


@pytest.mark.parametrize("text, seconds", [("10s", 10.0), ("500ms", 0.5), ("1m", 60.0), ("2h", 7200.0),
                                           ("15", 15.0), ("2.5s", 2.5)])
def test_durations(text, seconds):
    assert parse_duration(None, None, text) == seconds


def test_help_lists_the_options_of_the_issue():
    output = run("poll", "--help").output
    for option in ("--symbols", "--interval", "--klines", "--depth", "--trades", "--once", "--pg-dsn",
                   "--base-url"):
        assert option in output
