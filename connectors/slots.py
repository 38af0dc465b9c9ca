"""Replication slots in PostgreSQL: their state (what `cdc status` reports) and dropping them safely."""

from __future__ import annotations

import time
from dataclasses import dataclass

import psycopg

# WAL between the server's current position and what the slot's consumer has confirmed: what the slot
# forces PostgreSQL to keep. restart_lsn stands in while nothing has been confirmed yet.
_SLOTS_QUERY = """
SELECT slot_name, plugin, database, active, active_pid, wal_status,
       pg_wal_lsn_diff(pg_current_wal_lsn(), coalesce(confirmed_flush_lsn, restart_lsn))::bigint
  FROM pg_replication_slots
"""
_SLOT_QUERY = _SLOTS_QUERY + " WHERE slot_name = %s"


class SlotBusy(RuntimeError):
    """The slot is still in use by a replication connection."""


@dataclass(frozen=True)
class SlotState:
    name: str
    plugin: str | None
    database: str | None
    active: bool
    active_pid: int | None
    wal_status: str | None
    retained_bytes: int | None


def slot_state(conn: psycopg.Connection, name: str) -> SlotState | None:
    """The slot's state, or None when no slot has that name."""
    row = conn.execute(_SLOT_QUERY, (name,)).fetchone()
    return SlotState(*row) if row else None


def all_slot_states(conn: psycopg.Connection) -> list[SlotState]:
    """Every replication slot of the server, by name."""
    return sorted((SlotState(*row) for row in conn.execute(_SLOTS_QUERY)), key=lambda state: state.name)


def drop_slot(conn: psycopg.Connection, name: str, *, timeout: float = 30.0) -> bool:
    """Drop the slot once no connection uses it; False when it did not exist.

    A connector that was just deleted takes a moment to close its replication connection, so wait for
    the slot to become inactive (up to `timeout`) rather than failing with "slot is active".
    `conn` must be in autocommit mode.
    """
    deadline = time.monotonic() + timeout
    while True:
        state = slot_state(conn, name)
        if state is None:
            return False
        if not state.active:
            try:
                conn.execute("SELECT pg_drop_replication_slot(%s)", (name,))
                return True
            except psycopg.errors.ObjectInUse:
                pass  # a reader reconnected between the check and the drop: wait again
        if time.monotonic() >= deadline:
            raise SlotBusy(f"replication slot {name} is still active (pid {state.active_pid}) after "
                           f"{timeout:.0f}s; stop whatever reads it first")
        time.sleep(0.2)
