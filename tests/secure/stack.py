"""A secured native stack (`compose/native/stack up --secure`) in a state dir and on ports of its own.

Used by the secured-deployment tests, the benchmark and the demo. `up()` returns the client environment the
stack wrote (`secure.env`); `down()` stops only what `up()` started.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from tests.private_stack import STACK, PrivateStack, read_env_file

__all__ = ["SERVICES", "STACK", "SecureStack"]

# The secured stack runs the pipeline's own services and the schema registry (HTTPS); Prometheus and
# Alertmanager are the open stack's (the JMX exporters in the secured JVMs still get ports of their own).
SERVICES = ("postgres", "kafka", "connect", "cassandra", "registry")


def default_state_dir() -> Path:
    base = os.environ.get("CDC_SECURE_STATE_DIR")
    if base:
        return Path(base)
    return Path(os.environ.get("CDC_STATE_DIR") or Path.home() / ".local/state/cdc") / "secured"


@dataclass
class SecureStack(PrivateStack):
    state_dir: Path = field(default_factory=default_state_dir)
    services: tuple[str, ...] = SERVICES
    up_flags: tuple[str, ...] = ("--secure",)
    describe = "stack up --secure"
    client_env_file = "secure.env"

    def stack_settings(self) -> dict[str, str]:
        return {"CDC_STACK_SECURE": "1", "CDC_STACK_TIMEOUT": os.environ.get("CDC_SECURE_STACK_TIMEOUT", "480")}

    def secrets(self) -> dict[str, str]:
        """Every password of the stack: the clients' (secure.env, Kafka file) and the administrators'."""
        values = read_env_file(self.state_dir / "secure" / "secrets.env")
        client = self.client_env()
        for name in ("CDC_PG_PASSWORD", "CDC_CONNECT_PASSWORD", "CDC_CASSANDRA_PASSWORD"):
            values[name] = client[name]
        kafka = read_env_file(Path(client["CDC_KAFKA_CONFIG"]))
        values["sasl.password"] = kafka["sasl.password"]
        return {k: v for k, v in values.items() if v}

    def down(self, timeout: float = 600) -> None:
        super().down(timeout)
