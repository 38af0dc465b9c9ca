"""A native stack of our own (`compose/native/stack`) beside the developer's open one: its own state dir and
ports, started by a test session and stopped only if that session started it.

Ports are chosen free (bound to port 0) on the first start and kept in the state dir's `ports.env`, so a
stack left running is found again. The secured stack (`tests/secure/stack.py`) and the 3 + 3 cluster
(`tests/cluster/stack.py`) are the two kinds; each says how it is started and what its clients read.
"""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support import REPO

STACK = REPO / "compose" / "native" / "stack"
PORT_VARIABLES = ("CDC_PG_PORT", "CDC_KAFKA_PORT", "CDC_KAFKA_CONTROLLER_PORT", "CDC_CONNECT_PORT",
                  "CDC_CASSANDRA_PORT", "CDC_CASSANDRA_STORAGE_PORT", "CDC_CASSANDRA_JMX_PORT",
                  "CDC_KAFKA_METRICS_PORT", "CDC_CONNECT_METRICS_PORT", "CDC_CASSANDRA_METRICS_PORT",
                  "CDC_REGISTRY_PORT", "CDC_PROMETHEUS_PORT", "CDC_ALERTMANAGER_PORT")
# Variables of the open stack that must not leak into another stack's clients.
CLIENT_VARIABLES = ("CDC_PG_DSN", "CDC_PG_PASSWORD", "CDC_KAFKA_BOOTSTRAP", "CDC_KAFKA_CONFIG", "CDC_CONNECT_URL",
                    "CDC_SCHEMA_REGISTRY_URL", "CDC_CASSANDRA_HOSTS", "CDC_CASSANDRA_KEYSPACE")


def read_env_file(path: Path) -> dict[str, str]:
    """`NAME=value` lines as the shell would read them (values are shell-quoted)."""
    env: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if not line or line.startswith("#") or "=" not in line:
            continue
        name, _, raw = line.partition("=")
        words = shlex.split(raw) if raw else [""]
        env[name] = words[0] if words else ""
    return env


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def open_environ() -> dict[str, str]:
    """os.environ without the open stack's client settings."""
    return {k: v for k, v in os.environ.items() if k not in CLIENT_VARIABLES}


@dataclass
class PrivateStack:
    """What both kinds share; subclasses set `services`, `up_flags`, `describe`, `stack_settings()`,
    `client_env_file` and may choose their ports (`pick_ports`)."""

    state_dir: Path
    started: bool = False
    start_seconds: float = 0.0

    services: tuple[str, ...] = ()
    up_flags: tuple[str, ...] = ()
    describe = "stack up"
    client_env_file = ""

    @property
    def ports_file(self) -> Path:
        return self.state_dir / "ports.env"

    def pick_ports(self) -> dict[str, int]:
        return dict(zip(PORT_VARIABLES, free_ports(len(PORT_VARIABLES)), strict=True))

    def stack_settings(self) -> dict[str, str]:
        """The stack script's own variables for this kind (mode, node counts, timeout)."""
        return {}

    def stack_env(self) -> dict[str, str]:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if not self.ports_file.exists():
            self.ports_file.write_text("".join(f"{n}={p}\n" for n, p in self.pick_ports().items()))
        env = open_environ()
        env.update(read_env_file(self.ports_file))
        env.update({"CDC_STATE_DIR": str(self.state_dir), **self.stack_settings()})
        return env

    def stack(self, *args: str, timeout: float = 1200) -> subprocess.CompletedProcess:
        return subprocess.run([str(STACK), *args], capture_output=True, text=True, timeout=timeout,
                              env=self.stack_env())

    def running(self) -> bool:
        """Every service's recorded process alive (not `status`'s exit code: a node slow to answer its probe
        makes that 1, and a running stack must not be taken for one this session started)."""
        states = {fields[0]: fields[1] for fields in map(str.split, self.stack("status", *self.services).stdout.splitlines())
                  if len(fields) > 1}
        return all(states.get(service) == "running" for service in self.services)

    def up(self) -> dict[str, str]:
        """Start what is not running; the clients' environment."""
        running = self.running()
        t0 = time.monotonic()
        result = self.stack("up", *self.up_flags, *self.services)
        self.start_seconds = time.monotonic() - t0
        if result.returncode != 0:
            raise RuntimeError(f"{self.describe} failed (state {self.state_dir}):\n{result.stderr[-4000:]}")
        self.started = self.started or not running
        return self.client_env()

    def client_env(self) -> dict[str, str]:
        """os.environ without the open stack's client settings, plus what the stack wrote for its clients."""
        env = open_environ()
        env.update(read_env_file(self.state_dir / self.client_env_file))
        return env

    def down(self, timeout: float = 900) -> None:
        """Stop the services, only if this session started them."""
        if self.started:
            self.stack("down", *self.services, timeout=timeout)
            self.started = False
