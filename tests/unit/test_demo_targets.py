"""`make demo` registers its consumer with the native stack's Prometheus as the stack's configuration
discovers `cdc consume` targets (compose/prometheus/prometheus.yml), so CdcConsumerDown covers a demo."""

from __future__ import annotations

import fnmatch
import importlib.util
import json

import yaml

from tests.support import REPO


def _demo():
    spec = importlib.util.spec_from_file_location("cdc_demo", REPO / "compose" / "demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _consume_job_globs() -> list[str]:
    config = yaml.safe_load((REPO / "compose" / "prometheus" / "prometheus.yml").read_text())
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "cdc-consume")
    return [pattern for sd in job["file_sd_configs"] for pattern in sd["files"]]


def test_the_demo_consumer_is_a_target_of_the_cdc_consume_job(tmp_path):
    (tmp_path / "prometheus" / "targets").mkdir(parents=True)
    path = _demo().scrape_target("cdc-consume", 9464, tmp_path)
    relative = str(path.relative_to(tmp_path / "prometheus"))
    assert any(fnmatch.fnmatch(relative, pattern) for pattern in _consume_job_globs()), relative
    assert json.loads(path.read_text())[0]["targets"] == ["127.0.0.1:9464"]


def test_no_target_without_a_native_prometheus(tmp_path):
    assert _demo().scrape_target("cdc-consume", 9464, tmp_path) is None
