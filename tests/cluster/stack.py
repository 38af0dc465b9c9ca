"""A 3 + 3 native cluster (`compose/native/stack up --cassandra-nodes 3 --kafka-brokers 3`) in a state dir and
on ports of its own, beside the developer's open stack.

Node k listens on 127.0.0.k with the same ports, so each Cassandra JMX port p needs p+1, p+2 free too.
`up()` returns the clients' environment (os.environ without the open stack's client settings, plus the
ports and the stack's `cluster.env`).
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.private_stack import PrivateStack, read_env_file

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


@dataclass
class ClusterStack(PrivateStack):
    state_dir: Path = field(default_factory=default_state_dir)
    services: tuple[str, ...] = SERVICES
    describe = "stack up (3 + 3 cluster)"
    client_env_file = "cluster.env"

    def pick_ports(self) -> dict[str, int]:
        while True:
            ports = super().pick_ports()
            jmx = ports["CDC_CASSANDRA_JMX_PORT"]
            if all(_free(jmx + k) for k in range(1, NODES)) and jmx + NODES - 1 not in ports.values():
                return ports

    def stack_settings(self) -> dict[str, str]:
        return {"CDC_CASSANDRA_NODES": str(NODES), "CDC_KAFKA_BROKERS": str(NODES), "CDC_STACK_SECURE": "0",
                "CDC_STACK_TIMEOUT": os.environ.get("CDC_CLUSTER_STACK_TIMEOUT", "300")}

    def client_env(self) -> dict[str, str]:
        """The ports too: the cluster's clients and `stack kill/start` read them."""
        env = self.stack_env()
        env.pop("CDC_STACK_TIMEOUT")
        env.update(read_env_file(self.state_dir / self.client_env_file))
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

    def status(self):
        return self.stack("status", *SERVICES, timeout=120)
