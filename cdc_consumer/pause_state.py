"""Where `cdc consume` publishes why it is paused, so `cdc status` (another process) can show it.

A small JSON file per consumer group and process, `$CDC_STATE_DIR/consumers/<group>.<pid>.json`,
rewritten atomically (write + rename) when a pause starts or ends and at every progress interval, and
removed when the consumer stops. `cdc status` reads the files of its group that were refreshed within
`STALE_AFTER_S`; an older file belongs to a consumer that died without cleaning up and is ignored.
The same facts are on `/metrics` as `cdc_consumer_paused{reason}`; the file is what a status check on
the same machine can read without knowing the metrics port. Nothing secret is written: reasons are
tags and messages go through `secrets.mask_text`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cdc_consumer.secrets import mask_text

STALE_AFTER_S = 60.0


def state_dir(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(env.get("CDC_STATE_DIR") or Path.home() / ".local/state/cdc") / "consumers"


@dataclass
class Pause:
    reason: str  # e.g. cassandra_unavailable, registry_unavailable, kafka_unavailable
    since: float  # unix time
    message: str = ""


@dataclass
class ConsumerState:
    group: str
    pid: int
    updated: float
    pauses: list[Pause] = field(default_factory=list)

    @property
    def paused(self) -> bool:
        return bool(self.pauses)


class PauseStateFile:
    """The writer side, owned by one running consumer."""

    def __init__(self, group: str, directory: Path | None = None) -> None:
        self.group = group
        self.directory = directory or state_dir()
        self.path = self.directory / f"{_safe(group)}.{os.getpid()}.json"

    def write(self, pauses: list[Pause]) -> None:
        state = ConsumerState(self.group, os.getpid(), time.time(),
                              [Pause(p.reason, p.since, mask_text(p.message)[:300]) for p in pauses])
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            temporary = self.path.with_suffix(".tmp")
            temporary.write_text(json.dumps(asdict(state)), encoding="utf-8")
            temporary.replace(self.path)
        except OSError:  # status display only: never let it stop the consumer
            pass

    def remove(self) -> None:
        try:
            self.path.unlink()
        except OSError:
            pass


def read_states(group: str, directory: Path | None = None, now: float | None = None) -> list[ConsumerState]:
    """Fresh states of the consumers of `group` on this machine."""
    directory = directory or state_dir()
    now = time.time() if now is None else now
    states = []
    for path in sorted(directory.glob(f"{_safe(group)}.*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            state = ConsumerState(data["group"], int(data["pid"]), float(data["updated"]),
                                  [Pause(p["reason"], float(p["since"]), p.get("message", "")) for p in data["pauses"]])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if state.group == group and now - state.updated <= STALE_AFTER_S:
            states.append(state)
    return states


def _safe(group: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in group)
