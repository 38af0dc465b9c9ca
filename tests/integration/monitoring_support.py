"""Helpers of the monitoring tests: the stack's Prometheus and Alertmanager, scrape targets a test adds
through Prometheus' file_sd directory, and `cdc` processes with a metrics port."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
import yaml

from cdc_consumer.config import Settings
from tests.e2e.pipeline import CDC
from tests.support import REPO, unique_name

PROMETHEUS_CONFIG = REPO / "compose" / "prometheus" / "prometheus.yml"
DASHBOARDS_DIR = REPO / "grafana" / "dashboards"


def prometheus_url() -> str:
    return Settings.from_env().prometheus_url


def alertmanager_url() -> str:
    return os.environ.get("CDC_ALERTMANAGER_URL") or \
        f"http://127.0.0.1:{os.environ.get('CDC_ALERTMANAGER_PORT') or 9095}"


def require_ready(name: str, url: str) -> str:
    try:
        requests.get(f"{url}/-/ready", timeout=5).raise_for_status()
    except requests.RequestException as exc:
        pytest.fail(f"{name} is not ready at {url} ({exc}) — start the stack with `make stack-up`", pytrace=False)
    return url


def targets_dir() -> Path:
    """Where the native stack's Prometheus discovers targets (compose/native/stack writes the same path)."""
    state = Path(os.environ.get("CDC_STATE_DIR") or Path.home() / ".local" / "state" / "cdc").expanduser()
    return state / "prometheus" / "targets"


@contextmanager
def scrape_target(job: str, port: int):
    """Prometheus scrapes 127.0.0.1:port as `job` while inside (file_sd: written atomically, then removed)."""
    path = targets_dir() / f"{job}-{unique_name('test')}.json"
    partial = path.with_name(path.name + ".partial")  # outside the *.json glob until complete
    partial.write_text(json.dumps([{"targets": [f"127.0.0.1:{port}"], "labels": {"test": "1"}}]))
    partial.rename(path)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        path.unlink(missing_ok=True)


def query(prometheus: str, expr: str) -> list[dict]:
    """Instant query; the result vector (or matrix/scalar as a one-element list)."""
    response = requests.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=10)
    body = response.json()
    assert body.get("status") == "success", f"{expr}: {body.get('error') or response.text[:300]}"
    result = body["data"]["result"]
    return result if body["data"]["resultType"] in ("vector", "matrix") else [result]


def values(prometheus: str, expr: str) -> list[float]:
    return [float(sample["value"][1]) for sample in query(prometheus, expr)]


def active_alerts(alertmanager: str, alertname: str, **labels: str) -> list[dict]:
    matchers = [f'alertname="{alertname}"', *(f'{k}="{v}"' for k, v in labels.items())]
    response = requests.get(f"{alertmanager}/api/v2/alerts", params=[("filter", m) for m in matchers], timeout=5)
    response.raise_for_status()
    return [a for a in response.json() if a["status"]["state"] == "active"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_cdc(log: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([CDC, *args], stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, **(env or {})})


def stop(process: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def metrics_answer(port: int) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/metrics", timeout=2).ok
    except requests.RequestException:
        return False


def seconds(duration: str) -> float:
    """A Prometheus duration as used in the config files (10s, 1m, 2m30s)."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"(\d+)(ms|s|m|h)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(int(n) * units[u] for n, u in parts)


def scrape_interval(job: str) -> float:
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    job_config = next(j for j in config["scrape_configs"] if j["job_name"] == job)
    return seconds(job_config.get("scrape_interval") or config["global"]["scrape_interval"])


def evaluation_interval() -> float:
    return seconds(yaml.safe_load(PROMETHEUS_CONFIG.read_text())["global"]["evaluation_interval"])


def rule_for(alertname: str) -> float:
    for path in sorted((REPO / "compose" / "prometheus" / "rules").glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                if rule.get("alert") == alertname:
                    return seconds(rule.get("for", "0s"))
    raise KeyError(alertname)


def dashboard_queries() -> list[tuple[str, str, str]]:
    """(dashboard file, panel title, PromQL) of every Prometheus target of every dashboard."""
    found = []
    for path in sorted(DASHBOARDS_DIR.glob("*.json")):
        dashboard = json.loads(path.read_text())
        for panel in _panels(dashboard.get("panels", [])):
            for target in panel.get("targets", []):
                if "expr" in target and _is_prometheus(target, panel):
                    found.append((path.name, panel.get("title", ""), target["expr"]))
    return found


def _panels(panels: list[dict]):
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def _is_prometheus(target: dict, panel: dict) -> bool:
    source = target.get("datasource") or panel.get("datasource") or {}
    kind = source.get("type", "") if isinstance(source, dict) else str(source)
    return "prometheus" in kind.lower() or not kind


# Grafana's interval macros as Grafana would expand them for a short dashboard range.
GRAFANA_MACROS = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "5m"}


def expand_macros(expr: str) -> str:
    for macro, value in GRAFANA_MACROS.items():
        expr = expr.replace(macro, value)
    assert "$" not in expr, f"unexpanded variable in {expr}"
    return expr
