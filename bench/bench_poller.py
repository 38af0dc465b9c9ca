"""Benchmark: writing one poll cycle of 100 symbols (24h tickers + 1m klines) to PostgreSQL.

Target (issue 4): median cycle write <= 100 ms. Each cycle's data comes from the simulated market
(ingest.sim.SimMarket, stepped so every symbol trades: prices really change, so every cycle inserts 100
ticker rows and updates 100 open klines, plus new klines when a minute turns). The cycle is written with
ingest.store.Store, once per batching method (unnest arrays, executemany in pipeline mode, COPY into a
temp table), interleaved cycle by cycle, each into its own fresh database created at CDC_PG_DSN's
server and dropped afterwards.

    .venv/bin/python bench/bench_poller.py [--symbols 100] [--cycles 50] [--json-out FILE]
"""

from __future__ import annotations

import argparse
import inspect
import statistics
import sys
import time
import uuid
from contextlib import ExitStack, contextmanager
from pathlib import Path

import orjson
import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from cdc_consumer.config import PostgresSettings, Settings
from cdc_consumer.schema import apply_sql
from ingest.models import parse_kline, parse_ticker
from ingest.sim import SimMarket
from ingest.store import METHODS, Batch, Store

TARGET_MS = 100.0
DEFAULT_METHOD = inspect.signature(Store).parameters["method"].default
START_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z


def cycles(symbols: int, count: int, seed: int) -> list[Batch]:
    """`count` consecutive cycles of tickers + current 1m klines, one market second apart."""
    market = SimMarket(symbols, seed, START_MS)
    names = list(market.states)
    batches = []
    for _ in range(count):
        market.step(symbols=names)  # every symbol trades: every ticker and open kline changes
        tickers = [parse_ticker(market.ticker(name)) for name in names]
        klines = [parse_kline(name, "1m", row) for name in names
                  for row in market.klines(name, "1m", None, None, 2)]
        batches.append(Batch(tickers=tickers, klines=klines))
    return batches


@contextmanager
def fresh_database(settings: PostgresSettings):
    """A new database with the schema applied, on the server of CDC_PG_DSN; dropped afterwards."""
    name = f"bench_poller_{uuid.uuid4().hex[:8]}"
    admin = psycopg.connect(**settings.connect_kwargs(), autocommit=True)
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        dsn = make_conninfo("", **{**conninfo_to_dict(settings.dsn), "dbname": name})
        with psycopg.connect(**PostgresSettings(dsn, settings.password).connect_kwargs()) as conn:
            apply_sql(conn)
        yield PostgresSettings(dsn, settings.password)
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def measure(settings: PostgresSettings, batches: list[Batch]) -> list[dict]:
    """Write every cycle with each method, interleaved (so load changes on the machine hit all methods
    alike), each method into its own fresh database; the first cycle is a warm-up."""
    with ExitStack() as stack:
        stores = {m: Store(stack.enter_context(fresh_database(settings)), method=m) for m in METHODS}
        for store in stores.values():
            stack.callback(store.close)
            store.write(batches[0])
        times: dict[str, list[float]] = {m: [] for m in METHODS}
        totals = {m: [0, 0] for m in METHODS}
        for number, batch in enumerate(batches[1:]):
            order = METHODS[number % len(METHODS):] + METHODS[:number % len(METHODS)]
            for method in order:
                started = time.perf_counter()
                counts = stores[method].write(batch)
                times[method].append((time.perf_counter() - started) * 1000)
                totals[method][0] += sum(c.inserted for c in counts.values())
                totals[method][1] += sum(c.updated for c in counts.values())
    rows = sum(len(b) for b in batches[1:])
    return [{"method": m, "median_ms": statistics.median(times[m]), "p90_ms": quantile(times[m], 0.9),
             "min_ms": min(times[m]), "rows_per_cycle": rows / len(times[m]), "inserted": totals[m][0],
             "updated": totals[m][1], "rows_per_s": rows / (sum(times[m]) / 1000)} for m in METHODS]


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=100)
    parser.add_argument("--cycles", type=int, default=50, help="measured cycles per method (plus one warm-up)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json-out", type=Path, help="write the figures as JSON (key poller.cycle_ms)")
    args = parser.parse_args(argv)

    settings = Settings.from_env().postgres
    batches = cycles(args.symbols, args.cycles + 1, args.seed)
    print(f"one cycle = {args.symbols} tickers + {args.symbols} symbols' current 1m klines, "
          f"{args.cycles} cycles per method, prices changing every cycle")
    results = measure(settings, batches)
    for r in results:
        print(f"  {r['method']:<12} median {r['median_ms']:7.2f} ms  p90 {r['p90_ms']:7.2f} ms  "
              f"min {r['min_ms']:6.2f} ms  {r['rows_per_cycle']:.0f} rows/cycle "
              f"({r['inserted']} inserted, {r['updated']} updated)  {r['rows_per_s']:,.0f} rows/s")
    default = next(r for r in results if r["method"] == DEFAULT_METHOD)
    fastest = min(results, key=lambda r: r["median_ms"])
    print(f"poller.cycle_ms (default method {DEFAULT_METHOD}): {default['median_ms']:.2f} ms; "
          f"target <= {TARGET_MS:.0f} ms "
          f"-> {TARGET_MS / default['median_ms']:.1f}x headroom; fastest method: {fastest['method']}")
    if args.json_out:
        args.json_out.write_bytes(orjson.dumps({
            "poller.cycle_ms": round(default["median_ms"], 3),
            "poller.cycle_target_ms": TARGET_MS,
            "poller.rows_per_s": round(default["rows_per_s"]),
            "poller.methods": {r["method"]: {k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()
                                             if k != "method"} for r in results},
        }, option=orjson.OPT_INDENT_2))
    return 0 if default["median_ms"] <= TARGET_MS else 1


if __name__ == "__main__":
    sys.exit(main())
