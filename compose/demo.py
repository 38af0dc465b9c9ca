"""`make demo`: the whole pipeline on this machine, then a summary.

Starts the stack (docker compose when a Docker engine answers, otherwise the native stack), applies the
schema, registers the Debezium connector, polls live Binance if it is reachable — otherwise the
project's simulated exchange, and says so — runs `cdc consume`, and after a short run prints rows per
table in PostgreSQL and Cassandra, end-to-end latency, a sample cqlsh query, `cdc verify`, and how to
stop everything. Settings: DEMO_SECONDS (default 60), DEMO_SYMBOLS (default 20 symbols of the exchange).

DEMO_SECURE=1 runs the same pipeline on the secured native stack (`stack up --secure`: TLS and passwords
on every edge) in a state dir of its own ($CDC_STATE_DIR/secured, beside the open stack); every `cdc`
verb then reads the client settings the stack wrote ($CDC_STATE_DIR/secured/secure.env).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CDC = str(BIN / "cdc")
STATE = Path(os.environ.get("CDC_STATE_DIR", Path.home() / ".local/state/cdc"))
LOGS = STATE / "demo"
SIM_PORT = int(os.environ.get("DEMO_SIM_PORT", "8099"))
METRICS_PORT = int(os.environ.get("DEMO_METRICS_PORT", "9464"))
LIVE_BINANCE = "https://api.binance.com"
SECURE = os.environ.get("DEMO_SECURE", "") not in ("", "0")
SIM_SYMBOLS = ("BTCUSDT,ETHUSDT,BNBUSDT,SOLUSDT,XRPUSDT," +
               ",".join(f"SYM{i:03d}USDT" for i in range(1, 16)))


def say(message: str) -> None:
    print(f"\n==> {message}", flush=True)


def run(*args: str, check: bool = True, capture: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=check, text=True, capture_output=capture, cwd=REPO)


def docker_engine() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


def binance_reachable() -> bool:
    try:
        with urllib.request.urlopen(f"{LIVE_BINANCE}/api/v3/ping", timeout=3) as response:
            return response.status == 200
    except OSError:
        return False


def start(name: str, *args: str) -> subprocess.Popen:
    log = open(LOGS / f"{name}.log", "w")  # noqa: SIM115 - lives as long as the process
    return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True)


def stop(process: subprocess.Popen, timeout: float = 30) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_http(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"demo: {url} did not answer within {timeout:.0f}s") from None
            time.sleep(0.2)


def histogram_buckets(metrics_text: str, name: str) -> dict[float, float]:
    """Cumulative bucket counts of a Prometheus histogram, by upper bound."""
    buckets = {}
    for line in metrics_text.splitlines():
        if line.startswith(f"{name}_bucket"):
            bound = line.split('le="')[1].split('"')[0]
            buckets[float("inf") if bound == "+Inf" else float(bound)] = float(line.rsplit(" ", 1)[1])
    return buckets


def histogram_quantiles(metrics_text: str, name: str, baseline_text: str = "",
                        quantiles=(0.5, 0.99)) -> tuple[dict, int]:
    """Quantiles of the observations made since `baseline_text` (bucket counts minus the baseline's)."""
    from cdc_consumer.metrics import histogram_quantile

    before = histogram_buckets(baseline_text, name)
    buckets = [(bound, count - before.get(bound, 0.0))
               for bound, count in histogram_buckets(metrics_text, name).items()]
    total = int(max((count for _, count in buckets), default=0))
    return ({q: histogram_quantile(q, buckets) for q in quantiles} if total else {}), total


def metrics_text() -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{METRICS_PORT}/metrics", timeout=5) as response:
        return response.read().decode()


def wait_caught_up(consumer: subprocess.Popen, timeout: float = 180) -> None:
    """Until the consumer group has no lag (a previous run's backlog would skew this run's latency)."""
    import json

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and consumer.poll() is None:
        status = run(CDC, "status", "--json", "--skip", "connector", "--skip", "slot", "--skip", "cassandra",
                     check=False, capture=True)
        try:
            partitions = json.loads(status.stdout)["consumer"]["partitions"]
        except (ValueError, KeyError, TypeError):
            partitions = None
        if partitions is not None and sum(p.get("lag") or 0 for p in partitions) == 0:
            return
        time.sleep(1)


def summary(consumer_metrics: str, baseline_metrics: str, exchange: str) -> int:
    import psycopg

    from cdc_consumer import cql_session
    from cdc_consumer.config import Settings

    settings = Settings.from_env()
    say("Summary")
    print(f"exchange: {exchange}")
    counts = [  # (PostgreSQL label, its count query, Cassandra table)
        ("ticker_24h", "SELECT count(*) FROM ticker_24h", "ticker_by_day"),
        ("klines", "SELECT count(*) FROM klines", "klines_by_bucket"),
        ("order_book", "SELECT count(*) FROM order_book", "order_book"),
        ("trades", "SELECT count(*) FROM trades", "trades_by_day"),
        ("ticker_24h (latest per symbol)", "SELECT count(DISTINCT symbol) FROM ticker_24h", "latest_prices"),
    ]
    cluster, session = cql_session.connect(settings.cassandra, keyspace=settings.cassandra.keyspace)
    print(f"{'PostgreSQL table':34} {'rows':>8}   {'Cassandra table':18} {'rows':>8}")
    with psycopg.connect(**settings.postgres.connect_kwargs()) as conn:
        for pg_table, query, cass_table in counts:
            pg_rows = conn.execute(query).fetchone()[0]
            cass_rows = session.execute(f"SELECT count(*) FROM {cass_table}", timeout=60).one()[0]
            print(f"{pg_table:34} {pg_rows:>8}   {cass_table:18} {cass_rows:>8}")
    cluster.shutdown()
    stages = (("end-to-end latency (PostgreSQL commit -> Cassandra write acknowledged", "cdc_end_to_end_lag_seconds"),
              ("  commit -> Kafka (Debezium, Connect", "cdc_commit_to_kafka_seconds"),
              ("  Kafka -> Cassandra (cdc consume", "cdc_kafka_to_cassandra_seconds"))
    for what, histogram in stages:  # the consumer's histograms (the two stages on 1 record in 8)
        quantiles, count = histogram_quantiles(consumer_metrics, histogram, baseline_metrics)
        if count:
            print(f"{what}, {count} changes): p50 {quantiles[0.5] * 1000:.0f} ms, p99 {quantiles[0.99] * 1000:.0f} ms")
    keyspace = settings.cassandra.keyspace
    query = f"SELECT symbol, last_price, price_change_percent, event_time FROM {keyspace}.latest_prices LIMIT 5;"
    say(f"cqlsh -e \"{query}\"")
    cqlsh = run(str(BIN / "cqlsh"), *cqlsh_security(settings), settings.cassandra.hosts[0],
                str(settings.cassandra.port), "-e", query, check=False, capture=True)
    print(cqlsh.stdout.rstrip() or cqlsh.stderr.rstrip())
    say("cdc verify (PostgreSQL vs Cassandra, exact)")
    return run(CDC, "verify", "--no-progress", check=False).returncode


def cqlsh_security(settings) -> list[str]:
    """cqlsh options for TLS and a password: a cqlshrc and a credentials file (0600), never `-p PASSWORD`."""
    cfg = settings.cassandra
    if not cfg.username:
        return []
    rc, credentials, key = LOGS / "cqlshrc", LOGS / "cqlsh-credentials", LOGS / "cqlsh-client.key"
    for path in (rc, credentials, key):
        path.touch(mode=0o600, exist_ok=True)
    ssl = f"[connection]\nssl = true\n[ssl]\ncertfile = {cfg.ssl_ca}\nvalidate = true\n" if cfg.ssl_ca else ""
    if cfg.ssl_ca and cfg.ssl_cert and cfg.ssl_key:
        # cqlsh cannot take a key passphrase (it would prompt): it gets the key decrypted, 0600 like the password.
        subprocess.run(["openssl", "pkey", "-in", cfg.ssl_key, "-out", str(key), "-passin", "env:CQLSH_KEY_PASSWORD"],
                       env={**os.environ, "CQLSH_KEY_PASSWORD": cfg.ssl_key_password or ""}, check=True)
        ssl += f"usercert = {cfg.ssl_cert}\nuserkey = {key}\n"
    rc.write_text(f"[authentication]\nusername = {cfg.username}\n" + ssl)
    credentials.write_text(f"[PlainTextAuthProvider]\nusername = {cfg.username}\npassword = {cfg.password}\n")
    return ["--cqlshrc", str(rc), "--credentials", str(credentials)] + (["--ssl"] if cfg.ssl_ca else [])


def scrape_target(job: str, port: int, state: Path = STATE) -> Path | None:
    """Registers 127.0.0.1:PORT with the native stack's Prometheus (a file_sd file it watches, see
    compose/native/README.md), so the pipeline alerts (e.g. CdcConsumerDown) cover the demo's process.
    None when no native Prometheus keeps targets in this state dir (the secured stack runs none)."""
    targets = state / "prometheus" / "targets"
    if not targets.is_dir():
        return None
    path = targets / f"{job}-demo.json"
    path.write_text(json.dumps([{"targets": [f"127.0.0.1:{port}"], "labels": {"stack": "native", "demo": "1"}}]))
    return path


def start_secured_stack() -> Path:
    """The secured stack (started unless running); its client settings become this process's environment."""
    sys.path.insert(0, str(REPO))
    from tests.secure.stack import SecureStack

    say("DEMO_SECURE=1: starting the secured native stack (compose/native/stack up --secure: TLS and passwords "
        "on PostgreSQL, Kafka, Connect and Cassandra)")
    stack = SecureStack()
    try:
        env = stack.up()
    except RuntimeError as exc:
        raise SystemExit(f"demo: {exc}") from None
    os.environ.clear()
    os.environ.update(env)
    print(f"secured stack ready after {stack.start_seconds:.0f}s; state dir {stack.state_dir}; "
          f"client settings: set -a; . {stack.state_dir}/secure.env; set +a")
    return stack.state_dir


def main() -> int:
    global LOGS
    secured_state = start_secured_stack() if SECURE else None
    if secured_state is not None:
        LOGS = secured_state / "demo"
    LOGS.mkdir(parents=True, exist_ok=True)
    seconds = float(os.environ.get("DEMO_SECONDS", "60"))
    compose = secured_state is None and docker_engine()
    if compose:
        say("Docker engine found: docker compose up (Grafana on http://127.0.0.1:3000)")
        run("docker", "compose", "-f", "compose/docker-compose.yml", "--env-file", ".env", "up", "-d", "--wait")
        say("The compose stack runs the whole pipeline (init, connector, poller, consumer) itself.")
        print("Grafana: http://127.0.0.1:3000   stop: docker compose -f compose/docker-compose.yml down")
        return 0
    if secured_state is None:
        say("No Docker engine: starting the native stack (compose/native/stack up)")
        run(str(REPO / "compose/native/stack"), "up")
    say("cdc init")
    run(CDC, "init")
    say("cdc register-connector")
    run(CDC, "register-connector")

    processes: list[subprocess.Popen] = []
    target: Path | None = None
    try:
        if binance_reachable():
            base_url, symbols, exchange = LIVE_BINANCE, os.environ.get("DEMO_SYMBOLS", "BTCUSDT,ETHUSDT,BNBUSDT"), \
                "live Binance (api.binance.com)"
        else:
            say("Binance is NOT reachable from this machine: using the simulated exchange (cdc binance-sim), "
                "not live market data")
            processes.append(start("binance-sim", CDC, "binance-sim", "--port", str(SIM_PORT), "--symbols", "20"))
            base_url, symbols = f"http://127.0.0.1:{SIM_PORT}", os.environ.get("DEMO_SYMBOLS", SIM_SYMBOLS)
            exchange = f"simulated exchange at {base_url}"
            wait_http(f"{base_url}/api/v3/ping", 30)
        say(f"cdc consume (metrics on 127.0.0.1:{METRICS_PORT}) and cdc poll for {seconds:.0f}s against {exchange}")
        consumer = start("consume", CDC, "consume", "--metrics-port", str(METRICS_PORT), "--progress-every", "5")
        processes.append(consumer)
        target = scrape_target("cdc-consume", METRICS_PORT) if secured_state is None else None
        if target is not None:
            say(f"Prometheus scrapes the consumer ({target}): killing it fires CdcConsumerDown in Alertmanager")
        wait_http(f"http://127.0.0.1:{METRICS_PORT}/metrics", 60)
        wait_caught_up(consumer)
        baseline = metrics_text()
        poller = start("poll", CDC, "poll", "--symbols", symbols, "--interval", "2s", "--klines", "1m,1h",
                       "--depth", "10", "--trades", "50", "--base-url", base_url)
        processes.append(poller)
        time.sleep(seconds)  # the demo's run time, not synchronisation
        stop(poller)
        say("poller stopped; waiting for the consumer to apply everything")
        deadline = time.monotonic() + 120
        while run(CDC, "verify", "--no-progress", "--json", check=False, capture=True).returncode != 0:
            if time.monotonic() > deadline or consumer.poll() is not None:
                break
            time.sleep(2)
        verified = summary(metrics_text(), baseline, exchange)
    finally:
        for process in reversed(processes):
            stop(process)
        if target is not None:  # the demo's consumer is gone on purpose: no down alert for it
            target.unlink(missing_ok=True)
    say("Done")
    if secured_state is not None:
        ports = secured_state / "ports.env"
        print(f"logs: {LOGS}\nstatus: set -a; . {secured_state}/secure.env; set +a; .venv/bin/cdc status\n"
              f"stop the secured stack: (set -a; . {ports}; CDC_STATE_DIR={secured_state} "
              "compose/native/stack down)")
        return verified
    print(f"logs: {LOGS}\nstatus: .venv/bin/cdc status\nstop everything: make stack-down")
    print("Grafana needs Docker: with a Docker engine, `make demo` runs the compose stack with Grafana on :3000")
    return verified


if __name__ == "__main__":
    sys.exit(main())
