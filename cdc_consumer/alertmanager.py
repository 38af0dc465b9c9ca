"""Alertmanager API v2 edge: push alerts, list the active ones. Nothing else talks HTTP to Alertmanager."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import requests


class AlertmanagerUnavailable(Exception):
    """Transient: Alertmanager did not answer or answered 5xx; retry later."""


class AlertmanagerRejected(Exception):
    """Permanent: Alertmanager refused the request (4xx); retrying the same body cannot help."""


class AlertmanagerClient:
    def __init__(self, url: str, timeout: float = 5.0):
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()

    def push(self, alerts: Sequence[Mapping[str, Any]]) -> None:
        """POST /api/v2/alerts (firing alerts carry a future endsAt, resolved ones endsAt = now)."""
        self._call("POST", "/api/v2/alerts", json=list(alerts))

    def active_alerts(self, matchers: Mapping[str, str]) -> list[dict[str, Any]]:
        """Active (incl. silenced and inhibited) alerts whose labels equal `matchers`."""
        filters = [f'{name}="{value}"' for name, value in matchers.items()]
        response = self._call("GET", "/api/v2/alerts", params={"active": "true", "silenced": "true",
                                                               "inhibited": "true", "unprocessed": "true",
                                                               "filter": filters})
        return response.json()

    def _call(self, method: str, path: str, **kwargs) -> requests.Response:
        try:
            response = self.session.request(method, self.url + path, timeout=self.timeout, **kwargs)
        except requests.RequestException as exc:
            raise AlertmanagerUnavailable(f"Alertmanager at {self.url}: {type(exc).__name__}") from None
        if response.status_code >= 500:
            raise AlertmanagerUnavailable(f"Alertmanager at {self.url}: HTTP {response.status_code}")
        if response.status_code >= 400:
            raise AlertmanagerRejected(f"Alertmanager at {self.url} refused {method} {path}: "
                                       f"HTTP {response.status_code} {response.text[:300]}")
        return response

    def close(self) -> None:
        self.session.close()


def epoch_ms(timestamp: str) -> int:
    """Alertmanager's RFC 3339 time (`2026-11-30T11:00:00.123Z`, maybe nanoseconds) in epoch milliseconds."""
    text = timestamp.replace("Z", "+00:00")
    if "." in text:  # Python parses at most 6 fractional digits
        head, _, rest = text.partition(".")
        digits = "".join(c for c in rest[:9] if c.isdigit())
        text = f"{head}.{digits[:6].ljust(6, '0')}{rest[len(digits):]}"
    return int(datetime.fromisoformat(text).timestamp() * 1000)
