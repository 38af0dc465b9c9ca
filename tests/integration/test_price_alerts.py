"""`cdc alerts` on real Kafka and a real Alertmanager: firing, restarts (no re-fire, no lost window),
each change processed once. Records are real Debezium ticker envelopes with chosen prices (bench.envelopes).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import requests

from bench.envelopes import ticker_changes
from tests.integration.alerts_support import AlertsProcess, active_alerts, require_alertmanager, wait_all_committed
from tests.integration.consume_support import create_topic, produce
from tests.support import unique_name, wait_until


@pytest.fixture(scope="module")
def alertmanager_url(settings) -> str:
    return require_alertmanager(settings.alertmanager_url)


@pytest.fixture()
def run_alerts(tmp_path):
    """Start `cdc alerts` processes; every one is stopped at teardown, also when the test failed."""
    started: list[AlertsProcess] = []

    def start(name: str, *args: str) -> AlertsProcess:
        started.append(AlertsProcess(tmp_path, name, *args))
        return started[-1]

    yield start
    for process in started:
        process.stop()


def rules_file(tmp_path, rule: str, symbols: str) -> str:
    path = tmp_path / "rules.yml"
    path.write_text(f"""rules:
  - name: {rule}
    symbols: ["{symbols}"]
    window: 5m
    threshold_percent: 5
    direction: up
    labels: {{severity: test}}
""")
    return str(path)


def tickers(symbol_prices: list[tuple[str, str]], start: datetime, first_second: int):
    rows = [{"symbol": symbol, "event_time": start + timedelta(seconds=first_second + i),
             "last_price": Decimal(price), "quote_volume": Decimal("1000000")}
            for i, (symbol, price) in enumerate(symbol_prices)]
    return ticker_changes(rows).records


def test_alert_fires_once_and_survives_restarts(kafka_bootstrap, kafka_topic, alertmanager_url, tmp_path,
                                                run_alerts):
    tag = unique_name("r").upper().replace("_", "")
    moving, calm = f"{tag}AUSDT", f"{tag}BUSDT"
    rule = unique_name("price")
    create_topic(kafka_bootstrap, kafka_topic, 3)
    args = ("--rules", rules_file(tmp_path, rule, f"{tag}*"), "--topic", kafka_topic, "--group", f"{kafka_topic}-g",
            "--bootstrap", kafka_bootstrap, "--alertmanager-url", alertmanager_url, "--resend", "60s")
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=60)

    first = run_alerts("first", *args)
    first.wait_live()
    produce(kafka_bootstrap, kafka_topic, tickers([(moving, "100.00"), (calm, "50.00"), (moving, "103.00"),
                                                   (calm, "51.00")], start, 0))
    wait_all_committed(kafka_bootstrap, f"{kafka_topic}-g", kafka_topic)
    assert first.stop() == 0, first.log_path.read_text()
    assert first.pushed() == [], first.log_path.read_text()  # +3 % is under the 5 % threshold

    # The window began before the restart: 100.00 -> 105.50 is +5.5 % only if the window was rebuilt.
    second = run_alerts("second", *args)
    second.wait_live()
    produce(kafka_bootstrap, kafka_topic, tickers([(calm, "51.50"), (moving, "105.50")], start, 10))
    [alert] = wait_until(lambda: active_alerts(alertmanager_url, rule=rule), timeout=30,
                         what="the price alert in Alertmanager")
    assert alert["labels"] == {"alertname": "PriceMove", "rule": rule, "symbol": moving, "direction": "up",
                               "source": "cdc-alerts", "severity": "test"}
    assert alert["annotations"]["change_percent"] == "5.500"
    assert alert["annotations"]["from_price"] == "100.00000000"
    assert alert["startsAt"].startswith((start + timedelta(seconds=11)).strftime("%Y-%m-%dT%H:%M:%S"))
    assert second.wait_pushed_states(1) == ["firing"], second.log_path.read_text()
    wait_all_committed(kafka_bootstrap, f"{kafka_topic}-g", kafka_topic)
    assert second.stop() == 0, second.log_path.read_text()

    # A third run replays the window (the alert holds again in the replay) and sees it active: no re-fire,
    # also not for a new record that keeps the condition true.
    third = run_alerts("third", *args)
    third.wait_live()
    produce(kafka_bootstrap, kafka_topic, tickers([(moving, "106.00")], start, 20))
    wait_all_committed(kafka_bootstrap, f"{kafka_topic}-g", kafka_topic)
    assert third.pushed() == [], third.log_path.read_text()
    [still] = active_alerts(alertmanager_url, rule=rule)
    assert still["startsAt"] == alert["startsAt"]
    assert third.stop() == 0, third.log_path.read_text()
    assert "stopped: 7 records (6 replayed" in third.log_path.read_text(), third.log_path.read_text()
    assert active_alerts(alertmanager_url, rule=rule, symbol=calm) == []


def test_resolved_when_the_move_falls_back(kafka_bootstrap, kafka_topic, alertmanager_url, tmp_path, run_alerts):
    tag = unique_name("s").upper().replace("_", "")
    rule = unique_name("price")
    create_topic(kafka_bootstrap, kafka_topic, 1)
    process = run_alerts("run", "--rules", rules_file(tmp_path, rule, f"{tag}*"), "--topic", kafka_topic,
                         "--group", f"{kafka_topic}-g", "--bootstrap", kafka_bootstrap,
                         "--alertmanager-url", alertmanager_url, "--metrics-port", "0")
    process.wait_live()
    start = datetime.now(UTC).replace(microsecond=0)
    produce(kafka_bootstrap, kafka_topic, tickers([(f"{tag}USDT", "20.00"), (f"{tag}USDT", "21.00")], start, 0))
    wait_until(lambda: active_alerts(alertmanager_url, rule=rule), timeout=30, what="the alert to fire")
    produce(kafka_bootstrap, kafka_topic, tickers([(f"{tag}USDT", "20.50")], start, 2))  # +2.5 % from 20
    wait_until(lambda: not active_alerts(alertmanager_url, rule=rule), timeout=30, what="the alert to resolve")
    assert process.wait_pushed_states(2) == ["firing", "resolved"]
    port = re.search(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", process.log_path.read_text()).group(1)
    exposition = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    for series in ('cdc_alerts_pushed_total{state="firing"} 1.0', 'cdc_alerts_pushed_total{state="resolved"} 1.0',
                   'cdc_alerts_records_total{outcome="evaluated"} 3.0', "cdc_alerts_active 0.0"):
        assert series in exposition
    assert process.stop() == 0
