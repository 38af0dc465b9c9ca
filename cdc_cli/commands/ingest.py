"""`cdc poll` (Binance -> PostgreSQL) and `cdc binance-sim` (the simulated exchange)."""

from __future__ import annotations

import ipaddress
import logging
import re
import signal
import sys
import threading
from datetime import UTC

import click
import orjson

from cdc_cli.commands.options import pg_dsn_option, settings
from cdc_consumer.config import PostgresSettings
from cdc_consumer.secrets import mask_url

log = logging.getLogger(__name__)

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)?")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(ctx, param, value: str) -> float:
    """'10s', '500ms', '1m', '2h' or plain seconds -> seconds (> 0)."""
    match = _DURATION.fullmatch(value.strip())
    seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)] if match else 0.0
    if seconds <= 0:
        raise click.BadParameter(f"{value!r} is not a positive duration like 10s, 500ms, 1m or 2h")
    return seconds


def parse_tick(ctx, param, value: str) -> float:
    """A duration, or 0 for a market that moves only when stepped."""
    return 0.0 if value.strip() in ("0", "0s") else parse_duration(ctx, param, value)


def parse_symbols(ctx, param, value: str) -> tuple[str, ...]:
    from ingest.models import symbols_of

    try:
        symbols = symbols_of([s for s in value.split(",") if s.strip()])
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    if not symbols:
        raise click.BadParameter("no symbols given; e.g. --symbols BTCUSDT,ETHUSDT")
    return symbols


def parse_kline_intervals(ctx, param, value: str) -> tuple[str, ...]:
    from ingest.models import KLINE_INTERVALS

    intervals = tuple(dict.fromkeys(s.strip() for s in value.split(",") if s.strip()))
    bad = [i for i in intervals if i not in KLINE_INTERVALS]
    if bad:
        raise click.BadParameter(f"invalid kline interval(s) {', '.join(bad)}; Binance's are "
                                 f"{', '.join(KLINE_INTERVALS)}")
    return intervals


def stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT (Ctrl-C): the current cycle finishes, then the command exits 0."""
    stop = threading.Event()

    def request_stop(signum, frame) -> None:
        log.info("%s received: finishing the current cycle", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    return stop


@click.command()
@click.option("--symbols", required=True, envvar="CDC_POLL_SYMBOLS", callback=parse_symbols,
              help="Comma-separated Binance symbols, e.g. BTCUSDT,ETHUSDT.")
@click.option("--interval", default="10s", show_default=True, callback=parse_duration,
              help="Time between cycle starts (10s, 500ms, 1m).")
@click.option("--klines", "kline_intervals", default="1m", show_default=True, callback=parse_kline_intervals,
              help="Comma-separated kline intervals ('' for none).")
@click.option("--depth", type=click.IntRange(0, 5000), default=20, show_default=True,
              help="Order-book levels per side (0: no order book).")
@click.option("--trades", type=click.IntRange(0, 1000), default=100, show_default=True,
              help="Recent trades per request (0: no trades).")
@click.option("--backfill", type=click.IntRange(1, 1000), default=60, show_default=True,
              help="Klines fetched per symbol and interval on the first request.")
@click.option("--weight-budget", type=click.IntRange(1, 6000), default=5000, show_default=True,
              envvar="CDC_BINANCE_WEIGHT_BUDGET", help="Request weight per minute to stay under (Binance: 6000).")
@click.option("--once", is_flag=True, help="Run one cycle and exit.")
@pg_dsn_option
@click.option("--base-url", envvar="BINANCE_BASE_URL", default="https://api.binance.com", show_default=True,
              help="Binance REST base URL (e.g. the simulator's http://127.0.0.1:8099).")
@click.option("--write-method", type=click.Choice(["copy", "unnest", "executemany"]), default="copy",
              show_default=True, help="How rows are batched into PostgreSQL (see bench/bench_poller.py).")
@click.option("--metrics-port", type=click.IntRange(1, 65535), default=None,
              help="Serve Prometheus metrics on 127.0.0.1:PORT/metrics.")
def poll(symbols, interval, kline_intervals, depth, trades, backfill, weight_budget, once, pg_dsn, base_url,
         write_method, metrics_port) -> None:
    """Poll Binance market data into PostgreSQL; only real changes are written. SIGTERM/Ctrl-C exits 0."""
    from ingest.binance import BinanceClient, ClientConfig
    from ingest.poller import PollConfig, Poller, stop_aware_sleep
    from ingest.store import Store

    try:
        config = PollConfig(symbols, interval, kline_intervals, depth, trades, backfill, weight_budget)
        client_config = ClientConfig(base_url=base_url.rstrip("/"), weight_budget=weight_budget)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    metrics = serve_poller_metrics(metrics_port)
    stop = stop_on_signals()
    sleep = stop_aware_sleep(stop)
    client = BinanceClient(client_config, sleep=sleep)
    if metrics is not None:
        client.session.hooks["response"].append(metrics.observe_response)
    store = Store(PostgresSettings(pg_dsn, settings().postgres.password), method=write_method, sleep=sleep)
    log.info("polling %d symbol(s) from %s every %.1f s (klines %s, depth %d, trades %d, budget %d/min)",
             len(symbols), mask_url(client_config.base_url), interval, ",".join(kline_intervals) or "none", depth, trades,
             weight_budget)
    try:
        status = Poller(config, client, store, stop=stop, metrics=metrics).run(once=once)
    finally:
        client.close()
        store.close()
    sys.exit(status)


def serve_poller_metrics(port: int | None):
    """The poller's metrics served on 127.0.0.1:port, or None without a port; a taken port is a usage error."""
    if port is None:
        return None
    from ingest.metrics import PollerMetrics

    metrics = PollerMetrics()
    try:
        metrics.serve(port)
    except OSError as exc:
        raise click.UsageError(f"--metrics-port {port}: {exc.strerror or exc}") from exc
    return metrics


def loopback_host(ctx, param, value: str) -> str:
    """The simulator has an unauthenticated fault-injection endpoint: it never listens beyond loopback."""
    try:
        if value == "localhost" or ipaddress.ip_address(value).is_loopback:
            return value
    except ValueError:
        pass
    raise click.BadParameter(f"{value!r} is not a loopback address (127.0.0.1, ::1, localhost)")


@click.command("binance-sim")
@click.option("--port", type=click.IntRange(0, 65535), default=8099, show_default=True, help="0 picks a free port.")
@click.option("--host", default="127.0.0.1", show_default=True, callback=loopback_host,
              help="Loopback address to bind.")
@click.option("--symbols", "symbol_count", type=click.IntRange(1, 5000), default=20, show_default=True,
              help="Number of symbols: BTCUSDT, ETHUSDT, BNBUSDT, SOLUSDT, XRPUSDT, then SYM001USDT, ...")
@click.option("--seed", type=int, default=1, show_default=True, help="Random-walk seed (same seed, same market).")
@click.option("--tick", "tick_s", default="1s", show_default=True, callback=parse_tick,
              help="Market step period; 0 = prices move only on POST /__sim/step.")
@click.option("--weight-limit", type=click.IntRange(1), default=6000, show_default=True,
              help="Weight per minute before answering 429.")
@click.option("--start", type=click.DateTime(["%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"]), default=None,
              help="Market clock start (UTC), e.g. 2024-01-01T00:00:10; default now. Repeatable runs for tests.")
@click.option("--fault", "faults", multiple=True,
              help='Fault to inject at start, as JSON (repeatable), e.g. \'{"status": 500, "count": 2}\'.')
@click.option("--move", "moves", multiple=True,
              help="Scripted price move SYMBOL:+P%:Ns[@Ns] (repeatable), e.g. BTCUSDT:+6%:60s@30s.")
def binance_sim(port, host, symbol_count, seed, tick_s, weight_limit, start, faults, moves) -> None:
    """Serve a simulated Binance REST API (ticker/24hr, klines, depth, trades) with fault injection."""
    from ingest.models import datetime_to_millis
    from ingest.sim import SimServer

    start_ms = None if start is None else datetime_to_millis(start.replace(tzinfo=UTC))
    try:
        server = SimServer(host, port, symbols=symbol_count, seed=seed, tick_s=tick_s, weight_limit=weight_limit,
                           start_ms=start_ms)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    for spec in faults:
        try:
            server.state.add_fault(orjson.loads(spec))
        except (orjson.JSONDecodeError, ValueError, TypeError) as exc:
            server.httpd.server_close()
            raise click.BadParameter(f"{spec!r}: {exc}", param_hint="--fault") from exc
    for spec in moves:
        try:
            server.state.add_move(spec)
        except ValueError as exc:
            server.httpd.server_close()
            raise click.BadParameter(str(exc), param_hint="--move") from exc
    signal.signal(signal.SIGTERM, lambda signum, frame: threading.Thread(target=server.httpd.shutdown).start())
    click.echo(f"binance-sim serving {server.url} ({symbol_count} symbols, seed {seed}, "
               f"{'manual steps' if not tick_s else f'tick {tick_s:g} s'})", )
    sys.stdout.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.httpd.server_close()
