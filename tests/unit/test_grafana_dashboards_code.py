"""grafana/dashboards.py (grafana-foundation-sdk) is the source of grafana/dashboards/*.json: regenerating
must give the checked-in files byte for byte, and the generator's --check names a stale file."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from tests.support import REPO

GENERATOR = REPO / "grafana" / "dashboards.py"


@pytest.fixture(scope="module")
def generator():
    spec = importlib.util.spec_from_file_location("grafana_dashboards", GENERATOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_checked_in_dashboards_are_exactly_what_the_code_generates(generator):
    files = sorted(path.stem for path in (REPO / "grafana" / "dashboards").glob("*.json"))
    assert files == sorted(generator.DASHBOARDS)
    for name in generator.DASHBOARDS:
        checked_in = (REPO / "grafana" / "dashboards" / f"{name}.json").read_text()
        assert generator.render(name) == checked_in, f"{name}.json differs: run grafana/dashboards.py"


def test_generated_json_is_what_grafana_provisions(generator):
    health = json.loads(generator.render("pipeline-health"))
    assert health["uid"] == "cdc-pipeline-health" and health["editable"] is False
    assert health["schemaVersion"] >= 39
    by_title = {panel["title"]: panel for panel in health["panels"]}
    debezium = by_title["Debezium: behind source, queue"]
    assert [t["expr"] for t in debezium["targets"]][:2] == [
        "max(debezium_postgres_streaming_milliseconds_behind_source)",
        "min(debezium_postgres_streaming_queue_remaining_capacity)"]
    # upstream (poller, Debezium) sits on the row right below the consumer's stats
    assert {by_title[t]["gridPos"]["y"] for t in ("Debezium: behind source, queue", "Poller: cycles and rows written",
                                                  "Poller: request weight, rate limits, failures")} == {5}
    cassandra_target = json.loads(generator.render("trades"))["panels"][2]["targets"][0]
    assert cassandra_target["rawQuery"] is True and cassandra_target["datasource"]["uid"] == "cdc-cassandra"
    assert cassandra_target["target"].endswith("PER PARTITION LIMIT 200")


def test_check_mode_fails_on_a_stale_file(tmp_path):
    copy = tmp_path / "grafana"
    (copy / "dashboards").mkdir(parents=True)
    (copy / "dashboards.py").write_text(GENERATOR.read_text())
    for path in (REPO / "grafana" / "dashboards").glob("*.json"):
        (copy / "dashboards" / path.name).write_text(path.read_text())
    run = [sys.executable, str(copy / "dashboards.py"), "--check"]
    assert subprocess.run(run, capture_output=True).returncode == 0
    stale = copy / "dashboards" / "trades.json"
    stale.write_text(stale.read_text().replace("PER PARTITION LIMIT 200", "PER PARTITION LIMIT 300"))
    result = subprocess.run(run, capture_output=True, text=True)
    assert result.returncode == 1 and "trades.json" in result.stderr
