"""A private pipeline for end-to-end tests: its own database, slot, topic prefix, keyspace and group.

Everything runs on the real services of the native stack, driven through the `cdc` CLI as a user
would: `cdc register-connector`, `cdc consume` processes (which tests SIGKILL at will), `cdc verify`.
`fmt` picks the wire format end to end: JSON with schemas, or Avro through the stack's Apicurio registry.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import requests

from tests.oracle import assert_replicated
from tests.support import REPO, unique_name, wait_until

CDC = str(Path(sys.executable).parent / "cdc")
STACK = str(REPO / "compose" / "native" / "stack")


def cdc(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([CDC, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def stack(*args: str, timeout: float = 300) -> None:
    result = subprocess.run([STACK, *args], capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"stack {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"


@dataclass
class Pipeline:
    dsn: str
    keyspace: str
    log_dir: Path
    fmt: str = "json"
    session: Any = None  # Cassandra session, for the independent oracle (tests/oracle.py)
    connect_url: str = ""
    name: str = field(default_factory=lambda: unique_name("e2e"))
    consumers: list[subprocess.Popen] = field(default_factory=list)
    killed: set[int] = field(default_factory=set)  # pids of the consumers the test killed on purpose

    @property
    def prefix(self) -> str:
        return self.name

    @property
    def group(self) -> str:
        return f"{self.name}-group"

    @property
    def topics_regex(self) -> str:
        return rf"^{self.prefix}\.public\.(ticker_24h|klines|order_book|trades)$"

    def topic(self, table: str) -> str:
        return f"{self.prefix}.public.{table}"

    # -- connector -------------------------------------------------------------------------------
    def register(self) -> None:
        dbname = psycopg.conninfo.conninfo_to_dict(self.dsn)["dbname"]
        result = cdc("register-connector", "--name", self.name, "--timeout", "180", "--format", self.fmt,
                     "--set", f"database.dbname={dbname}", "--set", f"slot.name={self.name}",
                     "--set", f"topic.prefix={self.prefix}", "--set", "heartbeat.interval.ms=1000")
        assert result.returncode == 0, f"register-connector failed:\n{result.stdout}\n{result.stderr}"

    def wait_offset_committed(self, timeout: float = 60) -> None:
        """Until Connect has stored a source offset for the connector. Before the first one, a restart makes
        Debezium snapshot again, which cannot carry the deletes made meanwhile (README, known limits)."""
        def committed() -> bool:
            response = requests.get(f"{self.connect_url}/connectors/{self.name}/offsets", timeout=10)
            return response.ok and bool(response.json().get("offsets"))

        wait_until(committed, timeout=timeout, what=f"a committed source offset for {self.name}")

    def delete_connector(self) -> None:
        cdc("connector", "delete", self.name, "--drop-slot", "--yes", "--pg-dsn", self.dsn)

    # -- consumers -------------------------------------------------------------------------------
    def start_consumer(self, *extra: str) -> subprocess.Popen:
        index = len(self.consumers)
        log = open(self.log_dir / f"consumer-{index}.log", "w")  # noqa: SIM115 - closed with the process
        process = subprocess.Popen(
            [CDC, "consume", "--group", self.group, "--topics", self.topics_regex,
             "--cassandra-keyspace", self.keyspace, "--progress-every", "2", "--drain-timeout", "60",
             "--format", self.fmt, *extra],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.consumers.append(process)
        return process

    def kill(self, process: subprocess.Popen) -> None:
        self.killed.add(process.pid)
        process.send_signal(signal.SIGKILL)
        process.wait(30)

    def stop_consumers(self) -> dict[int, int]:
        """SIGTERM every running consumer; the exit code of each one the test did not kill on purpose, by pid
        (a consumer that does not stop within 90 s is SIGKILLed, and its -9 is reported)."""
        codes = {}
        for process in self.consumers:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(90)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            if process.pid not in self.killed:
                codes[process.pid] = process.returncode
        return codes

    def consumer_logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(self.log_dir.glob("*.log")))

    # -- verification ----------------------------------------------------------------------------
    def verify(self) -> dict:
        result = cdc("verify", "--json", "--no-progress", "--pg-dsn", self.dsn,
                     "--cassandra-keyspace", self.keyspace)
        assert result.returncode in (0, 1), f"verify could not run:\n{result.stdout}\n{result.stderr}"
        return json.loads(result.stdout)

    def wait_verified(self, timeout: float = 240) -> dict:
        """Poll `cdc verify` until PostgreSQL and Cassandra are identical (AssertionError with details if not),
        then judge the same data by the oracle that shares no code with the sink (tests/oracle.py)."""
        last: dict = {}

        def identical() -> bool:
            nonlocal last
            last = self.verify()
            return last["identical"]

        try:
            wait_until(identical, timeout=timeout, interval=2, what="cdc verify to report identical tables")
        except AssertionError as exc:
            summary = [{k: t[k] for k in ("target", "source_rows", "missing", "extra", "differing", "unmappable")}
                       | {"samples": t["samples"][:2]} for t in last.get("tables", [])]
            raise AssertionError(f"{exc}\nlast verify: {json.dumps(summary, default=str)}\n"
                                 f"{self.consumer_logs()}") from None
        assert_replicated(self.dsn, self.session, self.keyspace)
        return last


class ChangeStream(threading.Thread):
    """Writes `total` row changes to the market tables at about `rate` changes/s, in small transactions.

    A mix of kline inserts, updates of open klines (prices move), order-book level updates and
    ticker inserts, plus a few deletes — every change is a Debezium event downstream.
    """

    def __init__(self, dsn: str, total: int = 10_000, rate: float = 2_000, tx_size: int = 50,
                 seed: int = 7) -> None:
        super().__init__(daemon=True)
        self.dsn, self.total, self.rate, self.tx_size = dsn, total, rate, tx_size
        self.random = random.Random(seed)
        self.written = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with psycopg.connect(self.dsn, autocommit=False) as conn:
                start = time.monotonic()
                cycle = 0
                while self.written < self.total:
                    self.written += self._transaction(conn, cycle)
                    cycle += 1
                    ahead = self.written / self.rate - (time.monotonic() - start)
                    if ahead > 0:
                        time.sleep(ahead)  # rate limiting the load, not synchronisation
        except BaseException as exc:  # noqa: BLE001 - reported by wait()
            self.error = exc

    def _price(self) -> Decimal:
        return Decimal(f"{self.random.randrange(1, 10**12)}e-8")  # exact: 8 decimals

    def _transaction(self, conn, cycle: int) -> int:
        symbols = [f"E2E{i:02d}USDT" for i in range(20)]
        with conn.cursor() as cur:
            klines = [(s, "1m", "2026-11-21 00:00:00+00", cycle % 500) for s in symbols[: self.tx_size // 5]]
            cur.executemany(
                "INSERT INTO klines (symbol, interval, open_time, close, volume, number_of_trades) "
                "VALUES (%s, %s, %s::timestamptz + make_interval(mins => %s), %s, %s, 1) "
                "ON CONFLICT (symbol, interval, open_time) DO UPDATE SET close = EXCLUDED.close, "
                "volume = EXCLUDED.volume, number_of_trades = klines.number_of_trades + 1",
                [(s, i, t, m, self._price(), self._price()) for s, i, t, m in klines])
            levels = [(s, side, lvl, self._price(), self._price(), cycle)
                      for s in symbols[: self.tx_size // 10] for side in ("bid", "ask") for lvl in range(2)]
            cur.executemany(
                "INSERT INTO order_book (symbol, side, level, price, quantity, last_update_id, snapshot_time) "
                "VALUES (%s, %s, %s, %s, %s, %s, now()) ON CONFLICT (symbol, side, level) DO UPDATE SET "
                "price = EXCLUDED.price, quantity = EXCLUDED.quantity, last_update_id = EXCLUDED.last_update_id, "
                "snapshot_time = EXCLUDED.snapshot_time", levels)
            tickers = [(s, cycle, self._price(), self._price()) for s in symbols[: self.tx_size - len(klines) - len(levels)]]
            cur.executemany(
                "INSERT INTO ticker_24h (symbol, event_time, last_price, volume) "
                "VALUES (%s, '2026-11-21 00:00:00+00'::timestamptz + make_interval(secs => %s), %s, %s) "
                "ON CONFLICT DO NOTHING", tickers)
            deleted = 0
            if cycle % 20 == 19:
                cur.execute("DELETE FROM ticker_24h WHERE symbol = %s AND event_time = "
                            "'2026-11-21 00:00:00+00'::timestamptz + make_interval(secs => %s)",
                            (symbols[0], cycle - 10))
                deleted = cur.rowcount
        conn.commit()
        return len(klines) + len(levels) + len(tickers) + deleted

    def wait(self, timeout: float = 300) -> int:
        self.join(timeout)
        assert not self.is_alive(), f"change stream still running after {timeout}s ({self.written} written)"
        if self.error:
            raise self.error
        return self.written

def assert_exit_zero(codes: dict[int, int]) -> None:
    """Every consumer the test did not kill on purpose exited 0: a -9 (SIGKILLed after a stuck drain) or a
    -11 (a crash in a C extension) fails like any other non-zero code."""
    assert all(code == 0 for code in codes.values()), f"consumer exit codes by pid {codes}"
