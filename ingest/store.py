"""PostgreSQL edge of the poller: one transaction per cycle of batched, idempotent upserts.

Every write reaches Debezium as a change event, so a row is only written when its data changed:
- rows equal to what the table holds are filtered out before the INSERT (each looks up its current row
  by primary key and is dropped when `IS NOT DISTINCT FROM` it), so they take no row lock and write no
  WAL at all;
- `ON CONFLICT ... DO UPDATE ... WHERE (t.cols) IS DISTINCT FROM (excluded.cols)` still guards against a
  concurrent writer; `DO NOTHING` for immutable trades;
- `RETURNING (xmax = 0)` tells inserted from updated rows.
Batching (measured by bench/bench_poller.py, which compares all three): the default `copy` streams each
table's rows with COPY into a session temp table, then one INSERT ... SELECT upserts them (fastest: about
9 ms per 100-symbol cycle, 56 ms for 1000). `unnest` sends column arrays as parameters of one statement
(no temp table, so an unchanged cycle does not even assign a transaction id; about 1.4x slower, the
client-side array adaptation dominates); `executemany` runs one statement per row in pipeline mode
(slowest).

Failures are classified by SQLSTATE class (`failure_kind`):
- transient (a lost connection, 08; too many connections or out of resources, 53; shutdown or cancel, 57;
  system error, 58; serialization failure or deadlock, 40): retried with backoff; the cycle's batch stays
  in memory and the whole transaction is replayed, which is safe because every statement is idempotent;
- one row (a value its column rejects, 22; a constraint, 23): the batch is written again row by row, each
  row in its own savepoint, so the rows PostgreSQL refuses are named (table, key, SQLSTATE, reason),
  counted and skipped while every other row of the cycle is written;
- anything else (an unknown table or column, 42; a permission, 42501; ...) is permanent for the cycle:
  `BatchRejected`, which the poller counts towards its stop after consecutive failed cycles.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import psycopg
from psycopg.conninfo import make_conninfo

from cdc_consumer import pg
from cdc_consumer.config import PostgresSettings
from cdc_consumer.identifiers import validate_identifier
from ingest.models import DepthLevel, Kline, Ticker, Trade

log = logging.getLogger(__name__)

METHODS = ("copy", "unnest", "executemany")
APPLICATION_NAME = "cdc-poll"


@dataclass(frozen=True)
class TableSpec:
    """How one table is written: its columns (also the model attribute names) with SQL types, its key,
    and which columns count as a change (default: every non-key column). Immutable rows: DO NOTHING."""

    name: str
    columns: tuple[tuple[str, str], ...]
    key: tuple[str, ...]
    compared: tuple[str, ...] = ()
    immutable: bool = False

    def __post_init__(self) -> None:
        if not self.compared and not self.immutable:
            object.__setattr__(self, "compared", tuple(n for n in self.names if n not in self.key))
        for identifier in (self.name, *self.names, *self.key, *self.compared):
            validate_identifier(identifier, what=f"{self.name} identifier")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.columns)

    def row(self, item) -> tuple:
        return tuple(getattr(item, name) for name in self.names)

    def key_of(self, row: tuple) -> tuple:
        return tuple(row[self.names.index(k)] for k in self.key)

    def upsert_sql(self, source: str) -> str:
        """INSERT of the rows of `source` (aliased s, with our column names) that differ from the table.

        Each source row looks up its current row by primary key (LATERAL ... OFFSET 0 keeps that an index
        probe per row: a plain NOT EXISTS lets the planner hash-join against a scan of the whole,
        ever-growing history table)."""
        names = ", ".join(self.names)
        key_match = " AND ".join(f"cur.{k} = s.{k}" for k in self.key)
        looked_up = ", ".join(dict.fromkeys((*self.key, *self.compared)))
        changed = f"cur.{self.key[0]} IS NULL"
        if self.immutable:
            action = "DO NOTHING"
        else:
            changed += f" OR ({_cols('cur', self.compared)}) IS DISTINCT FROM ({_cols('s', self.compared)})"
            assignments = ", ".join(f"{c} = EXCLUDED.{c}" for c in self.names if c not in self.key)
            action = (f"DO UPDATE SET {assignments} WHERE ({_cols('t', self.compared)}) "
                      f"IS DISTINCT FROM ({_cols('EXCLUDED', self.compared)})")
        return (f"INSERT INTO {self.name} AS t ({names}) SELECT {_cols('s', self.names)} "
                f"FROM {source} AS s ({names}) LEFT JOIN LATERAL "
                f"(SELECT {looked_up} FROM {self.name} AS cur WHERE {key_match} OFFSET 0) AS cur ON true "
                f"WHERE {changed} "
                f"ON CONFLICT ({', '.join(self.key)}) {action} RETURNING (t.xmax = 0) AS inserted")

    def unnest_source(self) -> str:
        return "unnest(" + ", ".join(f"%s::{sql_type}[]" for _, sql_type in self.columns) + ")"

    def values_source(self) -> str:
        return "(VALUES (" + ", ".join(f"%s::{sql_type}" for _, sql_type in self.columns) + "))"


def _cols(alias: str, names: Iterable[str]) -> str:
    return ", ".join(f"{alias}.{n}" for n in names)


N = "numeric"  # the columns' precision and scale apply on insert; the arrays carry exact values
TICKERS = TableSpec(
    "ticker_24h",
    (("symbol", "text"), ("event_time", "timestamptz"), ("price_change", N), ("price_change_percent", N),
     ("weighted_avg_price", N), ("prev_close_price", N), ("last_price", N), ("last_qty", N), ("bid_price", N),
     ("bid_qty", N), ("ask_price", N), ("ask_qty", N), ("open_price", N), ("high_price", N), ("low_price", N),
     ("volume", N), ("quote_volume", N), ("open_time", "timestamptz"), ("close_time", "timestamptz"),
     ("first_id", "bigint"), ("last_id", "bigint"), ("trade_count", "bigint")),
    key=("symbol", "event_time"),
)
KLINES = TableSpec(
    "klines",
    (("symbol", "text"), ("interval", "text"), ("open_time", "timestamptz"), ("close_time", "timestamptz"),
     ("open", N), ("high", N), ("low", N), ("close", N), ("volume", N), ("quote_volume", N),
     ("number_of_trades", "int"), ("taker_buy_base_volume", N), ("taker_buy_quote_volume", N)),
    key=("symbol", "interval", "open_time"),
)
# A level changes when its price or quantity does; a new snapshot id alone is not a change.
ORDER_BOOK = TableSpec(
    "order_book",
    (("symbol", "text"), ("side", "text"), ("level", "smallint"), ("price", N), ("quantity", N),
     ("last_update_id", "bigint"), ("snapshot_time", "timestamptz")),
    key=("symbol", "side", "level"),
    compared=("price", "quantity"),
)
TRADES = TableSpec(
    "trades",
    (("symbol", "text"), ("trade_id", "bigint"), ("price", N), ("qty", N), ("quote_qty", N),
     ("trade_time", "timestamptz"), ("is_buyer_maker", "boolean"), ("is_best_match", "boolean")),
    key=("symbol", "trade_id"),
    immutable=True,
)
# Levels deeper than the latest snapshot of that (symbol, side) are gone from the book.
TRIM_BOOK_SQL = ("DELETE FROM order_book AS o USING unnest(%s::text[], %s::text[], %s::int[]) AS s (symbol, side, depth) "
                 "WHERE o.symbol = s.symbol AND o.side = s.side AND o.level >= s.depth")


@dataclass
class Batch:
    """What one poll cycle fetched, ready to write."""

    tickers: list[Ticker] = field(default_factory=list)
    klines: list[Kline] = field(default_factory=list)
    depth: list[DepthLevel] = field(default_factory=list)
    book_depths: dict[tuple[str, str], int] = field(default_factory=dict)  # (symbol, side) -> levels received
    trades: list[Trade] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.tickers) + len(self.klines) + len(self.depth) + len(self.trades)


@dataclass
class TableCounts:
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    rejected: int = 0  # rows PostgreSQL refused (named in the log); the others were written

    def __str__(self) -> str:
        text = f"+{self.inserted} ~{self.updated}"
        return text + (f" -{self.deleted}" if self.deleted else "") + (f" !{self.rejected}" if self.rejected else "")


class BatchRejected(Exception):
    """PostgreSQL refused the cycle's statements (an unknown column, a permission, ...): retrying cannot help.
    `sqlstate` is PostgreSQL's code, when it gave one."""

    def __init__(self, message: str, sqlstate: str | None = None):
        super().__init__(message)
        self.sqlstate = sqlstate


TRANSIENT, ROW, FATAL = "transient", "row", "fatal"
TRANSIENT_SQLSTATE_CLASSES = frozenset({"08", "40", "53", "57", "58"})
ROW_SQLSTATE_CLASSES = frozenset({"22", "23"})


def failure_kind(exc: Exception) -> str:
    """TRANSIENT (wait and retry), ROW (that row's value) or FATAL (the statement itself), by SQLSTATE class.

    A connection failure libpq reports without a SQLSTATE is transient."""
    if isinstance(exc, pg.ServiceUnavailable):
        return TRANSIENT
    sqlstate = getattr(exc, "sqlstate", None) or ""
    if not sqlstate:
        return TRANSIENT if isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)) else FATAL
    if sqlstate[:2] in TRANSIENT_SQLSTATE_CLASSES:
        return TRANSIENT
    return ROW if sqlstate[:2] in ROW_SQLSTATE_CLASSES else FATAL


def describe_error(exc: Exception) -> str:
    """`ClassName SQLSTATE: first line of the message` (short, no values beyond what PostgreSQL names)."""
    text = str(exc).strip()
    first_line = text.splitlines()[0][:200] if text else ""
    sqlstate = getattr(exc, "sqlstate", None)
    return f"{type(exc).__name__}{f' {sqlstate}' if sqlstate else ''}: {first_line}"


class Store:
    """Writes cycle batches to PostgreSQL, reconnecting (with backoff) when the connection is lost."""

    def __init__(self, settings: PostgresSettings, *, method: str = "copy",
                 sleep: Callable[[float], None] = time.sleep, backoff_cap_s: float = 30.0):
        if method not in METHODS:
            raise ValueError(f"unknown write method {method!r}; one of {', '.join(METHODS)}")
        self.settings = PostgresSettings(make_conninfo(settings.dsn, application_name=APPLICATION_NAME),
                                         settings.password)
        self.method = method
        self._sleep = sleep
        self._backoff_cap_s = backoff_cap_s
        self._conn: psycopg.Connection | None = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def write(self, batch: Batch) -> dict[str, TableCounts]:
        """Write the batch in one transaction; retried (the batch held in memory) until it commits.

        Rows PostgreSQL refuses are skipped and counted (`TableCounts.rejected`); a statement it refuses
        raises BatchRejected."""
        attempt = 0
        while True:
            try:
                return self._write_isolating_bad_rows(self._connection(), batch)
            except (psycopg.Error, pg.ServiceUnavailable) as exc:
                if failure_kind(exc) != TRANSIENT:
                    self.close()  # its stage tables copy the old table shape: the next cycle starts afresh
                    raise BatchRejected(f"PostgreSQL rejected the batch of {len(batch)} rows: {describe_error(exc)}",
                                        getattr(exc, "sqlstate", None)) from exc
                self.close()
                attempt += 1
                delay = min(self._backoff_cap_s, 0.2 * 2 ** attempt) * (0.5 + random.random() / 2)
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                log.warning("PostgreSQL write failed (%s); holding %d fetched rows, retry %d in %.1f s",
                            reason, len(batch), attempt, delay)
                self._sleep(delay)

    def _write_isolating_bad_rows(self, conn: psycopg.Connection, batch: Batch) -> dict[str, TableCounts]:
        """The batched write; if a row's value is refused (the transaction rolled back), the row-by-row one."""
        try:
            with conn.transaction():
                return self._write(conn, batch)
        except psycopg.Error as exc:
            if failure_kind(exc) != ROW:
                raise
            log.warning("PostgreSQL refused a row of the batch (%s); writing its %d rows one by one to name it",
                        describe_error(exc), len(batch))
        with conn.transaction():
            return self._write(conn, batch, row_by_row=True)

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            conn = pg.connect(self.settings)
            if self.method == "copy":
                with conn.transaction():
                    for spec in (TICKERS, KLINES, ORDER_BOOK, TRADES):
                        conn.execute(f"CREATE TEMP TABLE {stage_table(spec)} "
                                     f"(LIKE {spec.name} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS")
            self._conn = conn
        return self._conn

    def _write(self, conn: psycopg.Connection, batch: Batch, row_by_row: bool = False) -> dict[str, TableCounts]:
        upsert = self.upsert_row_by_row if row_by_row else self.upsert
        counts = {
            "ticker_24h": upsert(conn, TICKERS, batch.tickers),
            "klines": upsert(conn, KLINES, batch.klines),
            "order_book": upsert(conn, ORDER_BOOK, batch.depth),
            "trades": upsert(conn, TRADES, batch.trades),
        }
        if batch.book_depths:
            sides = list(batch.book_depths)
            trimmed = conn.execute(TRIM_BOOK_SQL, ([symbol for symbol, _ in sides], [side for _, side in sides],
                                                   list(batch.book_depths.values())))
            counts["order_book"].deleted = trimmed.rowcount
        return counts

    def upsert(self, conn: psycopg.Connection, spec: TableSpec, items: Sequence) -> TableCounts:
        rows = list({spec.key_of(r): r for r in map(spec.row, items)}.values())  # one row per key, last wins
        if not rows:
            return TableCounts()
        flags = getattr(self, f"_upsert_{self.method}")(conn, spec, rows)
        inserted = sum(flags)
        return TableCounts(inserted, len(flags) - inserted)

    @staticmethod
    def upsert_row_by_row(conn: psycopg.Connection, spec: TableSpec, items: Sequence) -> TableCounts:
        """Each row in its own savepoint: a row PostgreSQL refuses is logged by key and skipped."""
        counts = TableCounts()
        sql = spec.upsert_sql(spec.values_source())
        for row in {spec.key_of(r): r for r in map(spec.row, items)}.values():
            try:
                with conn.transaction():
                    flags = [flag for (flag,) in conn.execute(sql, row)]
            except psycopg.Error as exc:
                if failure_kind(exc) != ROW:
                    raise
                counts.rejected += 1
                key = ", ".join(f"{name}={value}" for name, value in zip(spec.key, spec.key_of(row)))
                column = getattr(exc.diag, "column_name", None)
                log.warning("rejected %s row (%s)%s: %s; the other rows are written", spec.name, key,
                            f" column {column}" if column else "", describe_error(exc))
                continue
            counts.inserted += sum(flags)
            counts.updated += len(flags) - sum(flags)
        return counts

    @staticmethod
    def _upsert_unnest(conn: psycopg.Connection, spec: TableSpec, rows: list[tuple]) -> list[bool]:
        columns = [list(column) for column in zip(*rows)]
        return [flag for (flag,) in conn.execute(spec.upsert_sql(spec.unnest_source()), columns)]

    @staticmethod
    def _upsert_executemany(conn: psycopg.Connection, spec: TableSpec, rows: list[tuple]) -> list[bool]:
        flags: list[bool] = []
        with conn.cursor() as cur:
            cur.executemany(spec.upsert_sql(spec.values_source()), rows, returning=True)
            while True:
                flags.extend(flag for (flag,) in cur.fetchall())
                if not cur.nextset():
                    return flags

    @staticmethod
    def _upsert_copy(conn: psycopg.Connection, spec: TableSpec, rows: list[tuple]) -> list[bool]:
        stage = stage_table(spec)  # created per connection; emptied by every commit
        with conn.cursor() as cur:
            with cur.copy(f"COPY {stage} ({', '.join(spec.names)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            return [flag for (flag,) in cur.execute(spec.upsert_sql(stage))]


def stage_table(spec: TableSpec) -> str:
    return f"stage_{spec.name}"
