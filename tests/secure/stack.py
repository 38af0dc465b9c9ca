"""A secured native stack (`compose/native/stack up --secure`) in a state dir and on ports of its own.

Used by the secured-deployment tests, the benchmark and the demo. Ports are chosen free (bound to port
0) on the first start and kept in the state dir, so a stack left running is found again. `up()` returns
the client environment the stack wrote (`secure.env`); `down()` stops only what `up()` started.
"""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.support import REPO

STACK = REPO / "compose" / "native" / "stack"
PORT_VARIABLES = ("CDC_PG_PORT", "CDC_KAFKA_PORT", "CDC_KAFKA_CONTROLLER_PORT", "CDC_CONNECT_PORT",
                  "CDC_CASSANDRA_PORT", "CDC_CASSANDRA_STORAGE_PORT", "CDC_CASSANDRA_JMX_PORT",
                  "CDC_KAFKA_METRICS_PORT", "CDC_CONNECT_METRICS_PORT", "CDC_CASSANDRA_METRICS_PORT",
                  "CDC_REGISTRY_PORT", "CDC_PROMETHEUS_PORT", "CDC_ALERTMANAGER_PORT")
# The secured stack runs the pipeline's own services; the registry, Prometheus and Alertmanager are the
# open stack's (the JMX exporters in the secured JVMs still get ports of their own above).
SERVICES = ("postgres", "kafka", "connect", "cassandra")
# Variables of the open stack that must not leak into the secured one's clients.
CLIENT_VARIABLES = ("CDC_PG_DSN", "CDC_PG_PASSWORD", "CDC_KAFKA_BOOTSTRAP", "CDC_KAFKA_CONFIG", "CDC_CONNECT_URL",
                    "CDC_SCHEMA_REGISTRY_URL", "CDC_CASSANDRA_HOSTS", "CDC_CASSANDRA_KEYSPACE")


def default_state_dir() -> Path:
    base = os.environ.get("CDC_SECURE_STATE_DIR")
    if base:
        return Path(base)
    return Path(os.environ.get("CDC_STATE_DIR") or Path.home() / ".local/state/cdc") / "secured"


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


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@dataclass
class SecureStack:
    state_dir: Path = field(default_factory=default_state_dir)
    started: bool = False
    start_seconds: float = 0.0

    @property
    def ports_file(self) -> Path:
        return self.state_dir / "ports.env"

    def stack_env(self) -> dict[str, str]:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if not self.ports_file.exists():
            ports = _free_ports(len(PORT_VARIABLES))
            self.ports_file.write_text("".join(f"{n}={p}\n" for n, p in zip(PORT_VARIABLES, ports, strict=True)))
        env = {k: v for k, v in os.environ.items() if k not in CLIENT_VARIABLES}
        env.update(read_env_file(self.ports_file))
        env.update({"CDC_STATE_DIR": str(self.state_dir), "CDC_STACK_SECURE": "1",
                    "CDC_STACK_TIMEOUT": os.environ.get("CDC_SECURE_STACK_TIMEOUT", "480")})
        return env

    def _stack(self, *args: str, timeout: float = 1200) -> subprocess.CompletedProcess:
        return subprocess.run([str(STACK), *args], capture_output=True, text=True, timeout=timeout,
                              env=self.stack_env())

    def up(self) -> dict[str, str]:
        """Start what is not running; the client environment (os.environ + secure.env)."""
        running = self._stack("status", *SERVICES).returncode == 0
        t0 = time.monotonic()
        result = self._stack("up", "--secure", *SERVICES)
        self.start_seconds = time.monotonic() - t0
        if result.returncode != 0:
            raise RuntimeError(f"stack up --secure failed (state {self.state_dir}):\n{result.stderr[-4000:]}")
        self.started = not running
        return self.client_env()

    def client_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in CLIENT_VARIABLES}
        env.update(read_env_file(self.state_dir / "secure.env"))
        return env

    def secrets(self) -> dict[str, str]:
        """Every password of the stack: the clients' (secure.env, Kafka file) and the administrators'."""
        values = read_env_file(self.state_dir / "secure" / "secrets.env")
        client = self.client_env()
        for name in ("CDC_PG_PASSWORD", "CDC_CONNECT_PASSWORD", "CDC_CASSANDRA_PASSWORD"):
            values[name] = client[name]
        kafka = read_env_file(Path(client["CDC_KAFKA_CONFIG"]))
        values["sasl.password"] = kafka["sasl.password"]
        return {k: v for k, v in values.items() if v}

    def down(self) -> None:
        if self.started:
            self._stack("down", *SERVICES, timeout=600)
            self.started = False
