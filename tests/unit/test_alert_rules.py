"""The pipeline alert rules (compose/prometheus/rules) are valid and do what their promtool unit tests
(compose/prometheus/tests/*_test.yml) say: each rule fires on hand-written series with its labels and
annotations, and stays quiet on the series beside them. promtool comes from Debian's `prometheus`; without
it these tests fail (they never skip), naming the package.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "compose" / "prometheus"
RULE_FILES = sorted((PROMETHEUS_DIR / "rules").glob("*.yml"))
TEST_FILES = sorted((PROMETHEUS_DIR / "tests").glob("*_test.yml"))


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool not found: install Debian's `prometheus` package (apt-get install prometheus)",
                    pytrace=False)
    return path


def run(promtool: str, *arguments: Path | str) -> subprocess.CompletedProcess:
    return subprocess.run([promtool, *map(str, arguments)], capture_output=True, text=True, timeout=120)


def test_the_rule_files_are_valid(promtool):
    assert RULE_FILES
    result = run(promtool, "check", "rules", *RULE_FILES)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("test_file", TEST_FILES, ids=lambda p: p.name)
def test_the_promtool_rule_tests_pass(promtool, test_file):
    result = run(promtool, "test", "rules", test_file)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def alert_names(paths) -> set[str]:
    return {rule["alert"] for path in paths for group in yaml.safe_load(path.read_text())["groups"]
            for rule in group["rules"] if "alert" in rule}


def test_every_rule_has_a_case_where_it_fires():
    firing = {case["alertname"] for path in TEST_FILES for test in yaml.safe_load(path.read_text())["tests"]
              for case in test.get("alert_rule_test", []) if case.get("exp_alerts")}
    assert alert_names(RULE_FILES) == firing


def test_the_issue_s_alerts_exist():
    assert {"CdcConsumerDown", "CdcConsumerLagHigh", "CdcDlqGrowing", "CdcConsumerPaused", "CdcEndToEndLatencyHigh",
            "DebeziumBehindSource", "ConnectorTaskNotRunning", "ReplicationSlotWalRetained",
            "CdcPollerFailing"} <= alert_names(RULE_FILES)


def test_a_failing_rule_test_is_reported(promtool, tmp_path):
    """The runner can fail: a case expecting the wrong labels makes promtool exit non-zero."""
    case = yaml.safe_load((PROMETHEUS_DIR / "tests" / "pipeline_test.yml").read_text())
    case["rule_files"] = [str(p) for p in RULE_FILES]
    case["tests"] = [case["tests"][0]]
    case["tests"][0]["alert_rule_test"][1]["exp_alerts"][0]["exp_labels"]["instance"] = "c:2"
    broken = tmp_path / "broken_test.yml"
    broken.write_text(yaml.safe_dump(case))
    result = run(promtool, "test", "rules", broken)
    assert result.returncode != 0 and "FAILED" in result.stdout + result.stderr
