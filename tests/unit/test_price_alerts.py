"""Price-move rules: validation of the rules file and exact window evaluation (literal oracles)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from cdc_cli.cli import main
from cdc_consumer.price_alerts import (
    PriceMoveEngine,
    Rule,
    RulesError,
    Window,
    load_rules,
    parse_rules,
)
from tests.support import REPO

MIN = 60_000
NOW = 1_800_000_000_000


def rule(name="r", symbols=("BTC*",), window_ms=5 * MIN, threshold="5", direction="either", min_qv=None,
         labels=()) -> Rule:
    return Rule(name, tuple(symbols), window_ms, Decimal(threshold), direction,
                None if min_qv is None else Decimal(min_qv), tuple(labels))


def test_example_rules_file_loads():
    rules = load_rules(REPO / "compose" / "alerts" / "price-rules.yml")
    assert [r.name for r in rules] == ["majors-5m-2pct", "alts-5m-crash", "any-1m-half-percent"]
    assert rules[0].window_ms == 300_000 and rules[0].threshold == Decimal("2")
    assert rules[1].direction == "down" and rules[1].min_quote_volume == Decimal("1000000")
    assert rules[2].threshold == Decimal("0.5") and rules[2].symbols == ("*",)
    assert rules[2].min_quote_volume == Decimal("50000000.5")  # exact, not a float
    assert dict(rules[0].labels) == {"severity": "warning", "desk": "majors"}


@pytest.mark.parametrize(("text", "message"), [
    ("rules: []", "non-empty list"),
    ("- a", "one key, `rules:`"),
    ("rules:\n  - {name: a, symbols: [BTC], window: 5x, threshold_percent: 1}", "'5x' is not a duration"),
    ("rules:\n  - {name: a, symbols: [BTC], window: 48h, threshold_percent: 1}", "longer than 24h"),
    ("rules:\n  - {name: a, symbols: [BTC], window: 5m, threshold_percent: 0}", "threshold_percent 0 must be"),
    ("rules:\n  - {name: a, symbols: [BTC], window: 5m, threshold_percent: .nan}", "'.nan' is not a number"),
    ("rules:\n  - {name: a, symbols: [btc], window: 5m, threshold_percent: 1}", "symbol glob 'btc'"),
    ("rules:\n  - {name: a, symbols: [BTC], window: 5m, threshold_percent: 1, direction: sideways}",
     "direction 'sideways'"),
    ("rules:\n  - {name: a, symbols: [BTC], window: 5m, threshold_percent: 1, labels: {symbol: x}}",
     "label 'symbol' is set by cdc alerts"),
    ("rules:\n  - {name: a, symbols: [BTC], window: 5m, threshold_percent: 1, labels: {9x: y}}",
     "not a Prometheus label name"),
    ("rules:\n  - {name: a, symbols: [BTC], window: 5m, threshold_percent: 1, extra: 1}", "unknown keys ['extra']"),
    ("rules:\n  - {name: a, symbols: [BTC], window: 5m}", "missing keys ['threshold_percent']"),
    ("rules:\n  - {name: 'a b', symbols: [BTC], window: 5m, threshold_percent: 1}", "name 'a b'"),
    ("rules: [", "not valid YAML"),
])
def test_invalid_rules_are_named(text, message):
    with pytest.raises(RulesError) as caught:
        parse_rules(text)
    assert message in str(caught.value)


def test_every_bad_rule_is_listed_and_duplicates_found():
    text = """rules:
  - {name: a, symbols: [BTC], window: 5m, threshold_percent: 1}
  - {name: b, symbols: [BTC], window: 5q, threshold_percent: 1}
  - {name: a, symbols: [ETH], window: 1m, threshold_percent: 2}
"""
    with pytest.raises(RulesError) as caught:
        parse_rules(text)
    assert "rule 2: b: '5q' is not a duration" in str(caught.value)
    assert "rule 3: name 'a' is used twice" in str(caught.value)


def test_yaml_aliases_are_refused():
    bomb = "a: &a [x, x, x]\nb: &b [*a, *a, *a]\nrules: [*b, *b]\n"
    with pytest.raises(RulesError, match="aliases"):
        parse_rules(bomb)


def test_rules_file_errors_name_the_file(tmp_path: Path):
    with pytest.raises(RulesError, match="missing.yml"):
        load_rules(tmp_path / "missing.yml")
    big = tmp_path / "big.yml"
    big.write_bytes(b"#" * (1 << 20 + 1))
    with pytest.raises(RulesError, match="larger than"):
        load_rules(big)


def test_window_low_high_evict_and_late_points():
    window = Window(60_000)
    for t, p in ((0, "10"), (10_000, "12"), (20_000, "9"), (30_000, "11")):
        window.add(t, Decimal(p))
    assert (window.low, window.high, window.newest) == (Decimal("9"), Decimal("12"), (30_000, Decimal("11")))
    window.add(75_000, Decimal("10.5"))  # 0 and 10 000 leave the window (older than 75 000 - 60 000)
    assert (window.low, window.high) == (Decimal("9"), Decimal("11"))
    window.add(25_000, Decimal("20"))  # late point from another partition, inside the window
    assert (window.high, window.newest) == (Decimal("20"), (75_000, Decimal("10.5")))
    window.add(25_000, Decimal("8"))  # the same row again: replaces its value
    assert (window.low, window.high) == (Decimal("8"), Decimal("11"))
    window.add(200_000, Decimal("1"))
    assert list(window.points) == [(200_000, Decimal("1"))]


def test_up_move_fires_at_exact_threshold_and_only_once():
    engine = PriceMoveEngine([rule(threshold="5", direction="up")], resend_ms=30_000)
    assert engine.observe("BTCUSDT", NOW, Decimal("100.00000000"), None, NOW) == []
    assert engine.observe("BTCUSDT", NOW + 1000, Decimal("104.99999999"), None, NOW) == []
    [update] = engine.observe("BTCUSDT", NOW + 2000, Decimal("105.00000000"), None, NOW + 2)
    assert update.state == "firing"
    assert dict(update.labels) == {"alertname": "PriceMove", "rule": "r", "symbol": "BTCUSDT",
                                   "direction": "up", "source": "cdc-alerts"}
    annotations = dict(update.annotations)
    assert annotations["change_percent"] == "5.000"
    assert (annotations["from_price"], annotations["to_price"]) == ("100.00000000", "105.00000000")
    assert update.starts_at_ms == NOW + 2000 and update.ends_at_ms == NOW + 2 + 120_000
    assert update.to_api()["startsAt"] == "2027-01-15T08:00:02.000Z"
    # still above the threshold: nothing until the resend interval passed, then a refresh (same start)
    assert engine.observe("BTCUSDT", NOW + 3000, Decimal("106"), None, NOW + 10_000) == []
    [refresh] = engine.observe("BTCUSDT", NOW + 4000, Decimal("106"), None, NOW + 40_000)
    assert (refresh.state, refresh.starts_at_ms) == ("refresh", NOW + 2000)
    # back under the threshold: resolved with endsAt = now
    [resolved] = engine.observe("BTCUSDT", NOW + 5000, Decimal("104"), None, NOW + 41_000)
    assert (resolved.state, resolved.ends_at_ms, resolved.labels) == ("resolved", NOW + 41_000, update.labels)


def test_down_move_from_window_high_and_either_direction():
    engine = PriceMoveEngine([rule(threshold="2", direction="either", window_ms=MIN)])
    engine.observe("BTCUSDT", NOW, Decimal("50.5"), None, NOW)
    assert engine.observe("BTCUSDT", NOW + 10_000, Decimal("51"), None, NOW) == []  # +0.99 %
    [update] = engine.observe("BTCUSDT", NOW + 20_000, Decimal("49.98"), None, NOW)
    assert dict(update.labels)["direction"] == "down"
    assert dict(update.annotations)["change_percent"] == "-2.000"  # (49.98 - 51) / 51 = -2.0000


def test_move_outside_the_window_does_not_fire():
    engine = PriceMoveEngine([rule(threshold="5", window_ms=MIN)])
    engine.observe("BTCUSDT", NOW, Decimal("100"), None, NOW)
    assert engine.observe("BTCUSDT", NOW + 61_000, Decimal("106"), None, NOW) == []


def test_symbol_globs_and_min_quote_volume():
    engine = PriceMoveEngine([rule(symbols=("ETH*", "SOL?SDT"), threshold="1", min_qv="1000")])
    for symbol in ("BTCUSDT", "ETHUSDT", "SOLUSDT"):
        engine.observe(symbol, NOW, Decimal("10"), Decimal("5000"), NOW)
    assert engine.observe("BTCUSDT", NOW + 1, Decimal("11"), Decimal("5000"), NOW) == []
    assert engine.observe("ETHUSDT", NOW + 1, Decimal("11"), Decimal("999.99999999"), NOW) == []
    assert [dict(u.labels)["symbol"] for u in engine.observe("SOLUSDT", NOW + 1, Decimal("11"), Decimal("1000"), NOW)
            ] == ["SOLUSDT"]


def test_rules_sharing_a_window_and_custom_labels():
    rules = [rule("warn", threshold="1", labels=(("severity", "warning"),)),
             rule("crit", threshold="3", labels=(("severity", "critical"),))]
    engine = PriceMoveEngine(rules)
    engine.observe("BTCUSDT", NOW, Decimal("100"), None, NOW)
    assert len(engine.plans["BTCUSDT"]) == 1
    fired = engine.observe("BTCUSDT", NOW + 1, Decimal("102"), None, NOW)
    assert [(dict(u.labels)["rule"], dict(u.labels)["severity"]) for u in fired] == [("warn", "warning")]
    fired = engine.observe("BTCUSDT", NOW + 2, Decimal("103"), None, NOW + 1)
    assert [dict(u.labels)["rule"] for u in fired] == ["crit"]


def test_adopted_alert_is_refreshed_not_fired_and_reset_keeps_active():
    engine = PriceMoveEngine([rule(threshold="5", direction="up")], resend_ms=30_000)
    labels = {"alertname": "PriceMove", "rule": "r", "symbol": "BTCUSDT", "direction": "up", "source": "cdc-alerts"}
    engine.observe("BTCUSDT", NOW, Decimal("100"), None, NOW)
    engine.adopt(labels, NOW - 5000, NOW + 100_000, NOW - 40_000)
    engine.adopt({**labels, "rule": "another-file"}, NOW - 5000, NOW + 100_000, NOW - 40_000)  # not adopted
    assert len(engine.active) == 1
    [update] = engine.observe("BTCUSDT", NOW + 1, Decimal("110"), None, NOW)
    assert (update.state, update.starts_at_ms) == ("refresh", NOW - 5000)
    engine.reset()
    assert engine.plans == {} and len(engine.active) == 1


def test_expire_drops_alerts_alertmanager_resolved_itself():
    engine = PriceMoveEngine([rule(threshold="5")], resend_ms=10_000)
    engine.observe("BTCUSDT", NOW, Decimal("100"), None, NOW)
    engine.observe("BTCUSDT", NOW + 1, Decimal("110"), None, NOW)
    engine.expire(NOW + 39_999)
    assert len(engine.active) == 1
    engine.expire(NOW + 40_000)
    assert engine.active == {}


def test_bad_rules_file_is_a_usage_error_without_traceback(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text("rules:\n  - {name: x, symbols: [BTC*], window: 5 minutes, threshold_percent: 5}\n")
    result = CliRunner().invoke(main, ["alerts", "--rules", str(bad)])
    assert result.exit_code == 2
    assert "rule 1: x: '5 minutes' is not a duration" in result.output
    assert "Traceback" not in result.output
    ok = CliRunner().invoke(main, ["alerts", "--rules", str(REPO / "compose" / "alerts" / "price-rules.yml"), "--check"])
    assert ok.exit_code == 0 and "majors-5m-2pct: BTCUSDT,ETHUSDT either >= 2% within 300s" in ok.output


@given(st.lists(st.tuples(st.integers(0, 40), st.integers(1, 9)), min_size=1, max_size=60), st.integers(1, 15))
def test_window_extremes_match_a_brute_force_scan(points, window_s):
    """Any arrival order (late points, repeated times): low/high/newest equal a scan of the kept points."""
    window, seen = Window(window_s * 1000), {}
    for second, price in points:
        window.add(second * 1000, Decimal(price))
        seen[second * 1000] = Decimal(price)
        newest = max(seen)
        kept = {t: p for t, p in seen.items() if t >= newest - window_s * 1000}
        assert window.newest == (newest, kept[newest])
        assert (window.low, window.high) == (min(kept.values()), max(kept.values()))
