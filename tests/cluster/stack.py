"""A 3 + 3 native cluster (`compose/native/stack up --cassandra-nodes 3 --kafka-brokers 3`) in a state dir and
on ports of its own, beside the developer's open stack; the pattern of `tests/secure/stack.py`.

Ports are chosen free on the first start and kept in the state dir. Node k listens on 127.0.0.k with the
same ports, so each Cassandra JMX port p needs p+1, p+2 free too. `up()` returns the clients' environment
(os.environ without the open stack's client settings, plus the ports and the stack's `cluster.env`).
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.secure.stack import CLIENT_VARIABLES, PORT_VARIABLES, STACK, _free_ports, read_env_file

NODES = 3
SERVICES = ("postgres", "kafka", "kafka-2", "kafka-3", "connect", "cassandra", "cassandra-2", "cassandra-3")


def default_state_dir() -> Path:
    base = os.environ.get("CDC_CLUSTER_STATE_DIR")
    if base:
        return Path(base)
    return Path(os.environ.get("CDC_STATE_DIR") or Path.home() / ".local/state/cdc") / "cluster-test"


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _pick_ports() -> dict[str, int]:
    while True:
        ports = dict(zip(PORT_VARIABLES, _free_ports(len(PORT_VARIABLES)), strict=True))
        jmx = ports["CDC_CASSANDRA_JMX_PORT"]
        if all(_free(jmx + k) for k in range(1, NODES)) and jmx + NODES - 1 not in ports.values():
            return ports


@dataclass
class ClusterStack:
    state_dir: Path = field(default_factory=default_state_dir)
    started: bool = False
    start_seconds: float = 0.0

    @property
    def ports_file(self) -> Path:
        return self.state_dir / "ports.env"

    def stack_env(self) -> dict[str, str]:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if not self.ports_file.exists():
            self.ports_file.write_text("".join(f"{n}={p}\n" for n, p in _pick_ports().items()))
        env = {k: v for k, v in os.environ.items() if k not in CLIENT_VARIABLES}
        env.update(read_env_file(self.ports_file))
        env.update({"CDC_STATE_DIR": str(self.state_dir), "CDC_CASSANDRA_NODES": str(NODES),
                    "CDC_KAFKA_BROKERS": str(NODES), "CDC_STACK_SECURE": "0",
                    "CDC_STACK_TIMEOUT": os.environ.get("CDC_CLUSTER_STACK_TIMEOUT", "300")})
        return env

    def stack(self, *args: str, timeout: float = 1200) -> subprocess.CompletedProcess:
        return subprocess.run([str(STACK), *args], capture_output=True, text=True, timeout=timeout,
                              env=self.stack_env())

    def running(self) -> bool:
        """Every service's recorded process alive (not `status`'s exit code: a node slow to answer its probe,
        or an under-replicated partition, makes that 1, and a running cluster must not be taken for ours)."""
        states = {line.split()[0]: line.split()[1] for line in self.stack("status", *SERVICES).stdout.splitlines()
                  if len(line.split()) > 1}
        return all(states.get(service) == "running" for service in SERVICES)

    def up(self) -> dict[str, str]:
        running = self.running()
        t0 = time.monotonic()
        result = self.stack("up", *SERVICES)
        self.start_seconds = time.monotonic() - t0
        if result.returncode != 0:
            raise RuntimeError(f"stack up (3 + 3 cluster) failed (state {self.state_dir}):\n{result.stderr[-4000:]}")
        self.started = self.started or not running
        return self.client_env()

    def client_env(self) -> dict[str, str]:
        env = self.stack_env()
        env.pop("CDC_STACK_TIMEOUT")
        env.update(read_env_file(self.state_dir / "cluster.env"))
        return env

    def kill(self, node: str) -> None:
        result = self.stack("kill", node, timeout=60)
        assert result.returncode == 0, f"stack kill {node}: {result.stderr}"

    def start(self, node: str) -> float:
        """Start a node again; seconds until it is ready."""
        t0 = time.monotonic()
        result = self.stack("start", node, timeout=600)
        assert result.returncode == 0, f"stack start {node}: {result.stderr[-3000:]}"
        return time.monotonic() - t0

    def status(self) -> subprocess.CompletedProcess:
        return self.stack("status", *SERVICES, timeout=120)

    def down(self) -> None:
        if self.started:
            self.stack("down", *SERVICES, timeout=900)
            self.started = False
