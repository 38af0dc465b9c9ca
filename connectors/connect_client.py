"""Kafka Connect REST edge: a thin client on `requests` whose failures are named exceptions.

Only the calls the CLI needs. HTTPS with a CA of one's own (`CDC_CONNECT_CA`) and basic auth
(`CDC_CONNECT_USERNAME`/`_PASSWORD`, or `https://user:password@host` in the URL: split off at once, so the
client's `url`, and every message, never holds the password). Connect answers 409 while its workers
rebalance (e.g. right after another connector was created); those calls are retried briefly before giving up.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from urllib.parse import quote

import requests

from cdc_consumer.config import HttpAuth
from cdc_consumer.http_errors import request_failure
from cdc_consumer.secrets import mask_text, mask_url, redact, split_url_credentials

RUNNING, FAILED, PAUSED, STOPPED = "RUNNING", "FAILED", "PAUSED", "STOPPED"


class ConnectError(RuntimeError):
    """Any failure talking to Kafka Connect; the message says what and where."""


class ConnectUnavailable(ConnectError):
    """Connect does not answer (refused, timed out, not HTTP)."""


class ConnectorNotFound(ConnectError):
    pass


class ConnectRequestFailed(ConnectError):
    """Connect answered with an error status."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


class ConnectAuthFailed(ConnectRequestFailed):
    """Connect refused our credentials (HTTP 401) or our access (403)."""


@dataclass(frozen=True)
class FieldError:
    name: str
    messages: tuple[str, ...]


@dataclass(frozen=True)
class Validation:
    connector_class: str
    errors: tuple[FieldError, ...]

    @property
    def ok(self) -> bool:
        return not self.errors


@dataclass(frozen=True)
class TaskState:
    id: int
    state: str
    worker_id: str = ""
    trace: str | None = None


@dataclass(frozen=True)
class ConnectorState:
    name: str
    state: str
    worker_id: str = ""
    trace: str | None = None
    tasks: tuple[TaskState, ...] = field(default_factory=tuple)

    @property
    def running(self) -> bool:
        """The connector and every task RUNNING (and at least one task started)."""
        return self.state == RUNNING and bool(self.tasks) and all(t.state == RUNNING for t in self.tasks)

    @property
    def failures(self) -> list[tuple[str, str | None]]:
        """(what, trace) for the connector and each task in FAILED state."""
        failed = [(f"connector {self.name}", self.trace)] if self.state == FAILED else []
        return failed + [(f"task {t.id}", t.trace) for t in self.tasks if t.state == FAILED]


def trace_head(trace: str | None, lines: int = 6) -> str:
    """The first lines of a Java stack trace: the exception and where it was thrown, then its root cause
    (Connect wraps e.g. a schema registry's refusal in "Tolerance exceeded in error handler")."""
    head = (trace or "").strip().splitlines()[:lines]
    cause = root_cause(trace)
    return "\n".join(head + [f"Caused by: {cause}"] if cause and f"Caused by: {cause}" not in head else head)


def root_cause(trace: str | None) -> str | None:
    """The innermost `Caused by:` of a Java stack trace (exception and message), or None."""
    causes = [line.strip()[len("Caused by:"):].strip() for line in (trace or "").splitlines()
              if line.strip().startswith("Caused by:")]
    return causes[-1] if causes else None


class ConnectClient:
    def __init__(self, url: str, *, timeout: float = 10.0, rebalance_wait: float = 15.0,
                 session: requests.Session | None = None, auth: HttpAuth | None = None):
        clean, user, password = split_url_credentials(url.rstrip("/"))
        auth = auth or HttpAuth()
        if user is not None:  # credentials written in the URL win over the environment's
            auth = HttpAuth(user, password, auth.ca)
        self.url = clean
        self.timeout = timeout
        self.rebalance_wait = rebalance_wait
        self.session = session or requests.Session()
        self._secrets = tuple(s for s in (auth.password,) if s)
        # Passed with every request: a session-level `verify` would lose to REQUESTS_CA_BUNDLE in the environment.
        self._auth_kwargs = auth.requests_kwargs()

    # --- calls -------------------------------------------------------------------------------------

    def plugins(self) -> list[str]:
        return [p["class"] for p in self._request("GET", "/connector-plugins").json()]

    def connectors(self) -> list[str]:
        return self._request("GET", "/connectors").json()

    def validate(self, config: dict[str, str]) -> Validation:
        connector_class = config.get("connector.class", "")
        body = self._request("PUT", f"/connector-plugins/{_seg(connector_class)}/config/validate",
                             json=config).json()
        errors = tuple(
            FieldError(item["value"]["name"], tuple(item["value"]["errors"]))
            for item in body.get("configs", [])
            if item.get("value", {}).get("errors")
        )
        return Validation(body.get("name", connector_class), errors)

    def get_config(self, name: str) -> dict[str, str] | None:
        """The connector's current config, or None when it does not exist."""
        try:
            return self._request("GET", f"/connectors/{_seg(name)}/config").json()
        except ConnectorNotFound:
            return None

    def task_configs(self, name: str) -> list[dict[str, str]]:
        """The config each task currently runs with (Connect rewrites them after a config update)."""
        return [t.get("config", {}) for t in self._request("GET", f"/connectors/{_seg(name)}/tasks").json()]

    def put_config(self, name: str, config: dict[str, str]) -> bool:
        """Create or update; True when the connector was created."""
        return self._request("PUT", f"/connectors/{_seg(name)}/config", json=config).status_code == 201

    def status(self, name: str) -> ConnectorState:
        body = self._request("GET", f"/connectors/{_seg(name)}/status").json()
        connector = body.get("connector", {})
        tasks = tuple(TaskState(t["id"], t["state"], t.get("worker_id", ""), t.get("trace"))
                      for t in sorted(body.get("tasks", []), key=lambda t: t["id"]))
        return ConnectorState(body.get("name", name), connector.get("state", "UNASSIGNED"),
                              connector.get("worker_id", ""), connector.get("trace"), tasks)

    def pause(self, name: str) -> None:
        self._request("PUT", f"/connectors/{_seg(name)}/pause")

    def resume(self, name: str) -> None:
        self._request("PUT", f"/connectors/{_seg(name)}/resume")

    def restart(self, name: str, *, include_tasks: bool = True, only_failed: bool = True) -> None:
        params = {"includeTasks": str(include_tasks).lower(), "onlyFailed": str(only_failed).lower()}
        self._request("POST", f"/connectors/{_seg(name)}/restart", params=params)

    def stop(self, name: str) -> None:
        """Stop the connector and its tasks (unlike pause, the tasks shut down; required to reset offsets)."""
        self._request("PUT", f"/connectors/{_seg(name)}/stop")

    def reset_offsets(self, name: str) -> None:
        """Forget the source offsets Connect stored for this connector (it must be STOPPED)."""
        self._request("DELETE", f"/connectors/{_seg(name)}/offsets")

    def delete(self, name: str) -> None:
        self._request("DELETE", f"/connectors/{_seg(name)}")

    # --- plumbing ----------------------------------------------------------------------------------

    def _request(self, method: str, path: str, **kwargs) -> requests.Response:
        deadline = time.monotonic() + self.rebalance_wait
        while True:
            response = self._send(method, path, **kwargs)
            if not _rebalancing(response) or time.monotonic() >= deadline:
                break
            time.sleep(0.5)  # rebalance in progress: Connect asks to retry
        if response.status_code in (401, 403):
            raise ConnectAuthFailed(
                f"Kafka Connect at {self.url} refused the request: HTTP {response.status_code} "
                f"({'wrong or missing username/password' if response.status_code == 401 else 'not allowed'}; "
                "set CDC_CONNECT_USERNAME/CDC_CONNECT_PASSWORD)", response.status_code)
        if response.status_code == 400 and self.url.startswith("http:") and "Bad Message" in response.text:
            raise ConnectUnavailable(f"Kafka Connect at {self.url}: the port answered a plain HTTP request with "
                                     "HTTP 400 (it probably requires TLS: use https:// and CDC_CONNECT_CA)")
        if response.status_code == 404 and path.startswith("/connectors/"):
            raise ConnectorNotFound(f"connector {path.split('/')[2]!r} does not exist on {mask_url(self.url)}")
        if response.status_code >= 400:
            raise ConnectRequestFailed(
                f"Kafka Connect {method} {path} failed with HTTP {response.status_code}: {_message(response)}",
                response.status_code)
        return response

    def _send(self, method: str, path: str, **kwargs) -> requests.Response:
        try:
            return self.session.request(method, self.url + path, timeout=self.timeout, **self._auth_kwargs, **kwargs)
        except requests.RequestException as exc:
            raise ConnectUnavailable(f"Kafka Connect unreachable at {mask_url(self.url)}: "
                                     f"{mask_text(redact(request_failure(exc, 'CDC_CONNECT_CA'), self._secrets))}") from None


def _seg(name: str) -> str:
    return quote(name, safe="")


def _message(response: requests.Response) -> str:
    try:
        return str(response.json().get("message", response.text))
    except ValueError:
        return response.text[:300]


def _rebalancing(response: requests.Response) -> bool:
    """Connect's workers are rebalancing: a 409, or (for some task reads) a 500 saying a rebalance is
    expected. Both are transient; the call is retried until the rebalance wait runs out."""
    if response.status_code == 409:
        return True
    return response.status_code == 500 and "rebalance" in response.text.lower()
