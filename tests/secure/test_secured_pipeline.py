"""Secured deployment on the real secured stack (`stack up --secure`): the whole pipeline with TLS and
authentication on every edge; each edge's failures named and bounded; no secret in any output; the
pipeline's Cassandra role confined to its keyspace."""

from __future__ import annotations

import dataclasses
import json
import re
import signal
import socket
import subprocess
import urllib.request

import certifi
import pytest

from cdc_consumer import cql_session, kafka_clients
from cdc_consumer.config import Settings
from connectors.connect_client import ConnectClient
from tests.secure.conftest import CDC
from tests.secure.stack import SERVICES, STACK
from tests.support import unique_name, wait_until

SYMBOLS = "BTCUSDT,ETHUSDT,BNBUSDT,SOLUSDT,XRPUSDT"
# A CA bundle that did not sign the stack's certificates (the public web PKI).
OTHER_CA = certifi.where()
# Everything a verb printed or logged, searched for every secret at the end of the module.
SEEN: dict[str, str] = {}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _settings(env: dict[str, str]) -> Settings:
    return Settings.from_env(env)


@pytest.fixture(scope="module")
def pipeline(secure_env, run_cdc, tmp_path_factory):
    """poll (simulator) → PostgreSQL → Debezium → Kafka → cdc consume → Cassandra, all secured."""
    name = unique_name("sec")
    log_dir = tmp_path_factory.mktemp("secure-pipeline")
    assert run_cdc("init").code == 0, run_cdc.outputs[-1]
    register = run_cdc("register-connector", "--name", name, "--timeout", "240", "--set", f"slot.name={name}",
                       "--set", f"topic.prefix={name}", "--set", "heartbeat.interval.ms=1000")
    assert register.code == 0, register
    metrics_port = _free_port()
    consumer_log = log_dir / "consume.log"
    with open(consumer_log, "w") as log:
        consumer = subprocess.Popen(
            [CDC, "consume", "--group", f"{name}-group",
             "--topics", rf"^{name}\.public\.(ticker_24h|klines|order_book|trades)$",
             "--metrics-port", str(metrics_port), "--progress-every", "2", "--log-format", "json"],
            stdout=log, stderr=subprocess.STDOUT, env=secure_env, start_new_session=True)
    sim = subprocess.Popen([CDC, "binance-sim", "--port", "0", "--symbols", "5", "--seed", "5"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=secure_env)
    state = {"name": name, "consumer": consumer, "metrics_port": metrics_port, "log": consumer_log}
    try:
        url = wait_until(lambda: re.search(r"http://127\.0\.0\.1:\d+", sim.stdout.readline() or ""),
                         timeout=30, what="binance-sim to print its URL").group(0)
        for _ in range(2):
            poll = run_cdc("poll", "--once", "--symbols", SYMBOLS, "--klines", "1m", "--depth", "5",
                           "--trades", "10", "--base-url", url)
            assert poll.code == 0, poll
        yield state
    finally:
        sim.terminate()
        sim.wait(10)
        if consumer.poll() is None:
            consumer.send_signal(signal.SIGTERM)
            consumer.wait(90)
        run_cdc("connector", "delete", name, "--drop-slot", "--yes")


def test_pipeline_end_to_end_on_the_secured_stack(pipeline, run_cdc, secure_env):
    def identical() -> bool:
        verify = run_cdc("verify", "--json", "--no-progress")
        return verify.code == 0 and json.loads(verify.stdout)["identical"]

    wait_until(identical, timeout=300, interval=3, what="cdc verify identical on the secured stack")
    report = json.loads(run_cdc.outputs[-1].stdout)
    rows = {t["target"]: t["matched"] for t in report["tables"]}
    assert rows["latest_prices"] >= 5 and rows["order_book"] >= 50 and rows["klines_by_bucket"] >= 5

    name = pipeline["name"]
    status = wait_until(lambda: (r := run_cdc("status", "--json", "--connector", name, "--group", f"{name}-group"))
                        .code == 0 and r, timeout=120, interval=3, what="cdc status healthy")
    health = json.loads(status.stdout)
    assert health["healthy"] is True and health["problems"] == []
    SEEN["status --json"] = status.stdout

    # What Connect keeps (its config topic): a reference to a file on the worker, not the password.
    client = ConnectClient(secure_env["CDC_CONNECT_URL"], auth=_settings(secure_env).connect_auth)
    stored = client.get_config(name)
    assert stored["database.password"].startswith("${file:") and secure_env["CDC_PG_PASSWORD"] not in json.dumps(stored)
    assert stored["database.sslmode"] == "verify-full"

    # An update shows a diff of what changes; secrets never.
    update = run_cdc("register-connector", "--name", name, "--timeout", "240", "--set", f"slot.name={name}",
                     "--set", f"topic.prefix={name}", "--set", "heartbeat.interval.ms=1000",
                     "--set", "poll.interval.ms=40")
    assert update.code == 0 and "poll.interval.ms" in update.output, update

    SEEN["metrics"] = urllib.request.urlopen(f"http://127.0.0.1:{pipeline['metrics_port']}/metrics",
                                             timeout=10).read().decode()
    assert "cdc_" in SEEN["metrics"]

    decode = run_cdc("decode", "--topic", f"{name}.public.klines", "--from-beginning", "--max", "2", "--timeout", "20")
    assert decode.code == 0 and len(decode.stdout.splitlines()) == 2, decode


def test_a_poison_record_reaches_the_dlq_over_sasl_ssl(pipeline, secure_env):
    kafka = _settings(secure_env).kafka
    topic = f"{pipeline['name']}.public.trades"
    producer = kafka_clients.producer(kafka)
    producer.produce(topic, key=b'{"id": 1}', value=b"this is not a Debezium record")
    assert producer.flush(30) == 0
    reader = kafka_clients.consumer(kafka, {"group.id": unique_name("dlq-reader"), "auto.offset.reset": "earliest"})
    reader.subscribe([f"{topic}.dlq"])
    try:
        message = wait_until(lambda: (m := reader.poll(1.0)) is not None and m.error() is None and m,
                             timeout=120, what="the poison record in the DLQ")
    finally:
        reader.close()
    headers = dict(message.headers())
    assert message.value() == b"this is not a Debezium record"
    assert headers["cdc.original.topic"] == topic.encode() and headers["cdc.error"]
    SEEN["dlq headers"] = repr(message.headers())


# --- failures on each edge: exit non-zero within seconds, named edge and cause, no traceback ---------

def _pg_dsn(env, **params) -> str:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return f"postgresql://cdc@127.0.0.1:{env['CDC_PG_PORT']}/cdc?{query}"


def _cases():
    pg = ("init", "--skip-cassandra")
    kafka = ("decode", "--topic", "cdc.public.klines", "--max", "1", "--timeout", "2")
    connect = ("connector", "status", "no-such-connector")
    cassandra = ("init", "--skip-postgres")
    return [
        # edge, case, verb, env changes (callable of the secure env), extra args, expected words
        ("postgres", "wrong password", pg, lambda e: {"CDC_PG_PASSWORD": "wrong-password"}, (),
         ("PostgreSQL", "password authentication failed")),
        ("postgres", "wrong CA", pg, lambda e: {"CDC_PG_DSN": _pg_dsn(e, sslmode="verify-full", sslrootcert=OTHER_CA)},
         (), ("PostgreSQL", "certificate verify failed")),
        ("postgres", "missing CA", pg, lambda e: {"CDC_PG_DSN": _pg_dsn(e, sslmode="verify-full", sslrootcert="/no/ca.crt")},
         (), ("PostgreSQL", "/no/ca.crt")),
        ("postgres", "plaintext", pg, lambda e: {"CDC_PG_DSN": _pg_dsn(e, sslmode="disable")}, (),
         ("PostgreSQL", "no encryption")),
        ("kafka", "wrong password", kafka, lambda e: {}, ("--kafka-config", "sasl.password=wrong-password"),
         ("Kafka at", "authentication failed")),
        ("kafka", "wrong CA", kafka, lambda e: {}, ("--kafka-config", f"ssl.ca.location={OTHER_CA}"),
         ("Kafka at", "TLS failed", "certificate verify failed")),
        ("kafka", "missing CA", kafka, lambda e: {}, ("--kafka-config", "ssl.ca.location=/no/ca.crt"),
         ("Kafka client configuration", "ssl.ca.location")),
        ("kafka", "plaintext", kafka, lambda e: {}, ("--kafka-config", "security.protocol=PLAINTEXT"),
         ("Kafka at", "security.protocol")),
        ("connect", "wrong password", connect, lambda e: {"CDC_CONNECT_PASSWORD": "wrong-password"}, (),
         ("Kafka Connect", "HTTP 401")),
        ("connect", "wrong CA", connect, lambda e: {"CDC_CONNECT_CA": OTHER_CA}, (),
         ("Kafka Connect", "certificate not trusted")),
        ("connect", "missing CA", connect, lambda e: {"CDC_CONNECT_CA": ""}, (),
         ("Kafka Connect", "certificate not trusted", "CDC_CONNECT_CA")),
        ("connect", "plaintext", connect,
         lambda e: {"CDC_CONNECT_URL": e["CDC_CONNECT_URL"].replace("https://", "http://")}, (),
         ("Kafka Connect", "https")),
        ("cassandra", "wrong password", cassandra, lambda e: {"CDC_CASSANDRA_PASSWORD": "wrong-password"}, (),
         ("Cassandra at", "authentication failed")),
        ("cassandra", "wrong CA", cassandra, lambda e: {"CDC_CASSANDRA_SSL_CA": OTHER_CA}, (),
         ("Cassandra at", "TLS handshake failed", "certificate verify failed")),
        ("cassandra", "missing CA", cassandra, lambda e: {"CDC_CASSANDRA_SSL_CA": "/no/ca.crt"}, (),
         ("CDC_CASSANDRA_SSL_CA=/no/ca.crt",)),
        ("cassandra", "plaintext", cassandra, lambda e: {"CDC_CASSANDRA_SSL_CA": ""}, (),
         ("Cassandra at", "requires TLS")),
    ]


@pytest.mark.parametrize("edge, case, verb, env_change, extra, expected", _cases(),
                         ids=[f"{c[0]}-{c[1].replace(' ', '-')}" for c in _cases()])
def test_each_edge_fails_fast_and_names_the_cause(secure_env, run_cdc, edge, case, verb, env_change, extra,
                                                  expected):
    result = run_cdc(*verb, *extra, env=env_change(secure_env), timeout=60)
    assert result.code != 0, result
    assert result.seconds < 30, result
    for word in expected:
        assert word in result.output, result
    assert "Traceback" not in result.output, result
    SEEN[f"{edge} {case}"] = result.output


# --- authorization ---------------------------------------------------------------------------------

def test_the_pipeline_role_cannot_write_outside_its_keyspace(secure_stack, secure_env):
    from cassandra import Unauthorized

    pipeline_cfg = _settings(secure_env).cassandra
    admin_cfg = dataclasses.replace(pipeline_cfg, username="admin",
                                    password=secure_stack.secrets()["CASSANDRA_ADMIN_PASSWORD"])
    outside = unique_name("outside")
    admin_cluster, admin = cql_session.connect(admin_cfg)
    cluster, session = cql_session.connect(pipeline_cfg)
    try:
        ddl = 120  # seconds: schema changes are slow on a loaded machine
        admin.execute(f"CREATE KEYSPACE {outside} WITH replication = {{'class': 'SimpleStrategy', 'replication_factor': 1}}",
                      timeout=ddl)
        admin.execute(f"CREATE TABLE {outside}.t (k int PRIMARY KEY, v text)", timeout=ddl)
        with pytest.raises(Unauthorized):
            session.execute(f"INSERT INTO {outside}.t (k, v) VALUES (1, 'x')")
        with pytest.raises(Unauthorized):
            session.execute(f"CREATE KEYSPACE {unique_name('nope')} WITH replication = "
                            "{'class': 'SimpleStrategy', 'replication_factor': 1}")
        with pytest.raises(Unauthorized):
            session.execute("CREATE ROLE intruder WITH LOGIN = true AND PASSWORD = 'x'")
        assert admin.execute(f"SELECT count(*) FROM {outside}.t").one()[0] == 0
        # ... while its own keyspace is writable and readable.
        keyspace = pipeline_cfg.keyspace
        session.execute(f"CREATE TABLE IF NOT EXISTS {keyspace}.secure_probe (k int PRIMARY KEY)", timeout=ddl)
        session.execute(f"INSERT INTO {keyspace}.secure_probe (k) VALUES (1)")
        assert session.execute(f"SELECT k FROM {keyspace}.secure_probe").one()[0] == 1
    finally:
        admin.execute(f"DROP KEYSPACE IF EXISTS {outside}", timeout=120)
        admin.execute(f"DROP TABLE IF EXISTS {pipeline_cfg.keyspace}.secure_probe", timeout=120)
        cluster.shutdown()
        admin_cluster.shutdown()


def test_the_stack_wrote_a_private_client_env(secure_stack):
    env_file = secure_stack.state_dir / "secure.env"
    assert env_file.stat().st_mode & 0o777 == 0o600
    names = set(re.findall(r"^(CDC_[A-Z_]+)=", env_file.read_text(), re.M))
    assert {"CDC_PG_DSN", "CDC_PG_PASSWORD", "CDC_KAFKA_CONFIG", "CDC_CONNECT_URL", "CDC_CONNECT_PASSWORD",
            "CDC_CONNECT_CA", "CDC_CASSANDRA_USERNAME", "CDC_CASSANDRA_PASSWORD", "CDC_CASSANDRA_SSL_CA"} <= names
    status = subprocess.run([str(STACK), "status", *SERVICES], capture_output=True, text=True, env=secure_stack.stack_env(),
                            timeout=120)
    assert status.returncode == 0 and status.stdout.startswith("mode: secure"), status.stdout + status.stderr


# --- no secret anywhere ----------------------------------------------------------------------------

def test_no_secret_appears_in_any_output(pipeline, secrets, run_cdc):
    consumer = pipeline["consumer"]
    consumer.send_signal(signal.SIGTERM)
    assert consumer.wait(90) == 0
    SEEN["consume log"] = pipeline["log"].read_text()
    assert '"message"' in SEEN["consume log"]  # the JSON log lines are there to be searched
    outputs = {f"cdc {' '.join(r.args)}": r.output for r in run_cdc.outputs} | SEEN
    assert {"status --json", "metrics", "dlq headers", "consume log"} <= set(SEEN), sorted(SEEN)
    for where, text in outputs.items():
        for name, value in secrets.items():
            assert value not in text, f"{name} appears in the output of {where}"
