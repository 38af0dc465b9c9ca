"""Where the machine's CPU goes during a benchmark: per process, per thread, for the whole machine, and how
late the scheduler wakes a sleeping thread. The benchmarks use these figures to show what sets a ceiling.

All from /proc (Linux): utime + stime of processes and threads, the `cpu` line of /proc/stat for the
machine. A `WakeupProbe` is a child process that sleeps 1 ms at a time and records how late each wake-up
is: on an oversubscribed machine a runnable thread waits for a core, and no stage of a pipeline can
answer faster than the scheduler lets it run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")
CORES = os.cpu_count() or 1


def state_dir() -> Path:
    return Path(os.environ.get("CDC_STATE_DIR") or Path.home() / ".local" / "state" / "cdc")


def stack_pids(service_prefix: str) -> list[int]:
    """PIDs the native stack recorded for a service (every node of it: `cassandra*.pid`)."""
    pids = []
    for pid_file in sorted((state_dir() / "run").glob(f"{service_prefix}*.pid")):
        pid = int(pid_file.read_text().split()[0])
        if Path(f"/proc/{pid}").exists():
            pids.append(pid)
    return pids


def with_descendants(pids: list[int]) -> list[int]:
    """The processes and every process below them (PostgreSQL's backends and walsenders under the postmaster)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # exited meanwhile
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], list(pids)
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def _stat_cpu(path: str) -> float:
    fields = Path(path).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime (fields 14 and 15 of stat)


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of the processes (all their threads), in seconds; a process gone counts 0."""
    total = 0.0
    for pid in pids:
        try:
            total += _stat_cpu(f"/proc/{pid}/stat")
        except OSError:
            pass
    return total


class CpuShares:
    """CPU of named groups of processes between `start()` and `stop()`, as cores used. A group is a function
    returning its PIDs, asked again at `stop()`: a process started meanwhile (a PostgreSQL backend for a new
    connection) counts from 0; one that exited meanwhile is lost."""

    def __init__(self, groups: dict[str, Callable[[], list[int]]]) -> None:
        self.groups = groups

    def start(self) -> None:
        self.before = {name: {pid: cpu_seconds([pid]) for pid in pids()} for name, pids in self.groups.items()}
        self.started = time.perf_counter()

    def stop(self) -> dict[str, float]:
        elapsed = time.perf_counter() - self.started
        return {name: sum(cpu_seconds([pid]) - self.before[name].get(pid, 0.0) for pid in pids()) / elapsed
                for name, pids in self.groups.items()}


def main_thread_cpu_seconds(pid: int) -> float:
    """utime + stime of a process's main thread alone (the one that runs a Python program's loop)."""
    return _stat_cpu(f"/proc/{pid}/task/{pid}/stat")


@dataclass(frozen=True)
class MachineCpu:
    """The machine's busy and total CPU seconds since boot (all cores), from /proc/stat."""

    busy: float
    total: float

    @classmethod
    def now(cls) -> MachineCpu:
        values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        idle = values[3] + values[4]  # idle + iowait
        total = sum(values[:8])  # guest time is already inside user
        return cls((total - idle) / TICK, total / TICK)

    def busy_share_since(self, earlier: MachineCpu) -> float:
        """Busy fraction of every core between `earlier` and this sample (1.0: no core was ever idle)."""
        return (self.busy - earlier.busy) / max(self.total - earlier.total, 1e-9)


_PROBE = """
import json, signal, sys, time
late, stop = [], []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
print("ready", flush=True)
while not stop:
    before = time.perf_counter()
    time.sleep(0.001)
    late.append(time.perf_counter() - before - 0.001)
json.dump(late, sys.stdout)
"""


class WakeupProbe:
    """A child process that sleeps 1 ms at a time until stopped and reports how late it woke up."""

    def __init__(self) -> None:
        self.process = subprocess.Popen([sys.executable, "-c", _PROBE], stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None  # stdout=PIPE
        self.process.stdout.readline()  # its SIGTERM handler is in place: stop() cannot kill it midway

    def stop(self) -> list[float]:
        """Wake-up delays in ms, one per sleep."""
        self.process.send_signal(signal.SIGTERM)
        output, _ = self.process.communicate(timeout=60)
        return [seconds * 1000 for seconds in json.loads(output)]
