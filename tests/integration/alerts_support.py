"""Helpers of the `cdc alerts` tests: Alertmanager (required, never skipped), the verb as a process."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import pytest
import requests

from tests.support import wait_until

CDC = str(Path(sys.executable).parent / "cdc")


def require_alertmanager(url: str) -> str:
    """Alertmanager at CDC_ALERTMANAGER_URL answers its API, or the test fails naming it."""
    try:
        requests.get(f"{url}/api/v2/status", timeout=5).raise_for_status()
    except requests.RequestException as exc:
        host = urlparse(url)
        pytest.fail(f"Alertmanager is not reachable at {host.hostname}:{host.port} ({type(exc).__name__}) — "
                    "start the stack with `make stack-up` (service alertmanager) or set CDC_ALERTMANAGER_URL",
                    pytrace=False)
    return url


def active_alerts(url: str, **labels: str) -> list[dict]:
    """Active alerts whose labels include `labels` (Alertmanager's own filter, an independent reader)."""
    filters = [f'{name}="{value}"' for name, value in labels.items()]
    response = requests.get(f"{url}/api/v2/alerts", params={"active": "true", "filter": filters}, timeout=5)
    response.raise_for_status()
    return [alert for alert in response.json() if alert["status"]["state"] == "active"]


class AlertsProcess:
    """`cdc alerts` as a child process; its stdout (one JSON line per pushed alert) and log kept in files."""

    def __init__(self, log_dir: Path, name: str, *args: str):
        self.stdout_path, self.log_path = log_dir / f"{name}.out", log_dir / f"{name}.log"
        with open(self.stdout_path, "w") as out, open(self.log_path, "w") as log:
            self.process = subprocess.Popen([CDC, "-v", "alerts", *args], stdout=out, stderr=log)

    def wait_live(self, timeout: float = 60) -> None:
        """Until every partition was assigned (replay planned), i.e. new records are evaluated live."""
        def live() -> bool:
            if self.process.poll() is not None:
                raise _Exited(f"cdc alerts exited {self.process.returncode}:\n{self.log_path.read_text()[-2000:]}")
            return "live from" in self.log_path.read_text()

        wait_until(live, timeout=timeout, what="cdc alerts to join its group")

    def pushed(self) -> list[dict]:
        return [json.loads(line) for line in self.stdout_path.read_text().splitlines() if line.strip()]

    def wait_pushed_states(self, count: int, timeout: float = 30) -> list[str]:
        """The states of the first `count` pushes, once printed. The verb prints a push after Alertmanager
        accepted it, so a test that saw the alert change in Alertmanager must still wait for the line."""
        wait_until(lambda: len(self.pushed()) >= count, timeout=timeout, what=f"{count} pushed alert line(s)")
        return [p["state"] for p in self.pushed()]

    def stop(self, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


class _Exited(AssertionError):
    """cdc alerts ended while a test waited for it."""


def all_committed(bootstrap: str, group: str, topic: str) -> bool:
    """The group committed the end of every partition that holds records (empty ones have no commit)."""
    from tests.integration.consume_support import committed_offsets, high_watermarks

    committed = committed_offsets(bootstrap, group, topic)
    return all(end == 0 or committed[p] == end for p, end in high_watermarks(bootstrap, topic).items())


def wait_all_committed(bootstrap: str, group: str, topic: str, timeout: float = 60) -> None:
    wait_until(lambda: all_committed(bootstrap, group, topic), timeout=timeout,
               what=f"group {group} to commit every record of {topic}")
