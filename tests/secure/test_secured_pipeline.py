"""Secured deployment on the real secured stack (`stack up --secure`): the whole pipeline with TLS and
authentication on every edge; each edge's failures named and bounded; no secret in any output; the
pipeline's Cassandra role confined to its keyspace."""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import re
import signal
import socket
import ssl
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from secrets import token_hex

import certifi
import fastavro
import psycopg
import pytest
import requests

from cdc_consumer import cql_session, kafka_clients
from cdc_consumer.config import Settings
from connectors.connect_client import ConnectClient, trace_head
from tests.integration.test_registry_apicurio import CONTENT_TYPE, envelope_schema
from tests.private_stack import read_env_file
from tests.secure.conftest import CDC
from tests.secure.stack import SERVICES, STACK
from tests.support import unique_name, wait_until

# The first test's setup holds the cold start of the secured stack (minutes on a loaded machine) and the
# pipeline's registration: far beyond the suite's 600 s per test, as for the cluster tests.
pytestmark = [pytest.mark.timeout(1800)]

SYMBOLS = "BTCUSDT,ETHUSDT,BNBUSDT,SOLUSDT,XRPUSDT"
# A CA bundle that did not sign the stack's certificates (the public web PKI).
OTHER_CA = certifi.where()
# Everything a verb printed or logged, searched for every secret at the end of the module.
SEEN: dict[str, str] = {}
# Secrets made up by single tests (wrong passwords inside a DSN or URL, a registry's password), searched too.
EXTRA_SECRETS: dict[str, str] = {}
# The Avro record `cdc decode --format avro` reads in the registry tests, and what it must print.
AFTER = {"symbol": "BTCUSDT", "price": Decimal("97123.12345678")}
AFTER_JSON = {"symbol": "BTCUSDT", "price": "97123.12345678"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _settings(env: dict[str, str]) -> Settings:
    return Settings.from_env(env)


def _avro_line(schema: dict, schema_id: int, topic: str) -> str:
    """A `cdc decode --format avro --input -` line: AFTER written with `schema`, framed with `schema_id`."""
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(schema),
                               {"before": None, "after": AFTER, "op": "c", "ts_ms": 1})
    framed = b"\x00" + schema_id.to_bytes(4, "big") + body.getvalue()
    return json.dumps({"topic": topic, "key": None, "value": base64.b64encode(framed).decode()}) + "\n"


DECODE_AVRO = ("decode", "--format", "avro", "--input", "-")
# Any id: each failure case fails at the registry's TLS or HTTP layer before the id matters.
EDGE_AVRO_LINE = _avro_line(envelope_schema("secedge"), 1, "secedge.public.klines")


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
        state["sim_url"] = url
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


def test_register_connector_creates_topics_with_the_kafka_config_given_on_its_command_line(pipeline, run_cdc):
    name, wrong = pipeline["name"], f"wrong-kafka-{token_hex(12)}"
    EXTRA_SECRETS["wrong sasl.password on a command line"] = wrong
    result = run_cdc("register-connector", "--name", name, "--timeout", "240", "--set", f"slot.name={name}",
                     "--set", f"topic.prefix={name}", "--set", "heartbeat.interval.ms=1000",
                     "--set", "poll.interval.ms=40", "--kafka-config", f"sasl.password={wrong}")
    # The topic step's admin client used the override: Kafka refused it, named at once, and the step is
    # skipped with a warning (the connector itself is Connect's business and stays as it was).
    assert result.code == 0 and result.seconds < 60, result
    assert "topics not created beforehand (Kafka at" in result.output and "authentication failed" in result.output, result
    assert "%3|" not in result.output, result  # no raw librdkafka log lines


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
        ("cassandra", "no client certificate", cassandra,
         lambda e: {"CDC_CASSANDRA_SSL_CERT": "", "CDC_CASSANDRA_SSL_KEY": ""}, (),
         ("Cassandra at", "TLS handshake failed", "client certificate", "CDC_CASSANDRA_SSL_CERT")),
        ("cassandra", "wrong key passphrase", cassandra, lambda e: {"CDC_CASSANDRA_SSL_KEY_PASSWORD": "wrong-passphrase"},
         (), ("Cassandra TLS setup failed",)),
        # Apicurio 2.6 has no basic auth without an OIDC server: the wrong password is tested against a
        # registry of our own below (test_registry_basic_auth_...).
        ("registry", "wrong CA", DECODE_AVRO, lambda e: {"CDC_SCHEMA_REGISTRY_CA": OTHER_CA}, (),
         ("schema registry https://", "TLS failed", "certificate not trusted")),
        ("registry", "missing CA", DECODE_AVRO, lambda e: {"CDC_SCHEMA_REGISTRY_CA": ""}, (),
         ("schema registry https://", "certificate not trusted", "CDC_SCHEMA_REGISTRY_CA")),
        ("registry", "plaintext", DECODE_AVRO,
         lambda e: {"CDC_SCHEMA_REGISTRY_URL": e["CDC_SCHEMA_REGISTRY_URL"].replace("https://", "http://")}, (),
         ("schema registry http://", "https://")),
    ]


@pytest.mark.parametrize("edge, case, verb, env_change, extra, expected", _cases(),
                         ids=[f"{c[0]}-{c[1].replace(' ', '-')}" for c in _cases()])
def test_each_edge_fails_fast_and_names_the_cause(secure_env, run_cdc, edge, case, verb, env_change, extra,
                                                  expected):
    stdin = EDGE_AVRO_LINE if verb == DECODE_AVRO else None
    result = run_cdc(*verb, *extra, env=env_change(secure_env), timeout=60, stdin=stdin)
    assert result.code != 0, result
    assert result.seconds < 30, result
    for word in expected:
        assert word in result.output, result
    assert "Traceback" not in result.output, result
    SEEN[f"{edge} {case}"] = result.output


# `cdc consume` refused by a service (issue 14): exit 1 at start-up, one line naming the edge, no traceback.
CONSUME = ("consume", "--group", "refused-consumer", "--topics", "^no-such-topic$", "--drain-timeout", "1")


@pytest.mark.parametrize("edge, env_change, extra, expected", [
    ("cassandra", {"CDC_CASSANDRA_PASSWORD": "wrong-password"}, (), ("Cassandra at", "authentication failed")),
    ("kafka", {}, ("--kafka-config", "sasl.password=wrong-password"), ("Kafka at", "authentication failed")),
], ids=["cassandra-wrong-password", "kafka-wrong-password"])
def test_consume_with_refused_credentials_exits_1_with_one_line(run_cdc, edge, env_change, extra, expected):
    result = run_cdc(*CONSUME, *extra, env=env_change, timeout=60)
    assert result.code == 1, result
    assert result.seconds < 30, result
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result
    for word in expected:
        assert word in lines[0], result
    assert "Traceback" not in result.output, result
    SEEN[f"consume {edge} refused"] = result.output


# --- the schema registry over HTTPS ----------------------------------------------------------------

def test_the_registry_serves_schemas_over_https_only(secure_env, run_cdc):
    url = secure_env["CDC_SCHEMA_REGISTRY_URL"]
    assert url.startswith("https://"), url
    name = unique_name("sreg")
    schema = envelope_schema(name)
    response = requests.post(f"{url}/subjects/{name}.public.klines-value/versions", headers=CONTENT_TYPE,
                             data=json.dumps({"schema": json.dumps(schema)}), timeout=30,
                             verify=secure_env["CDC_SCHEMA_REGISTRY_CA"])
    assert response.status_code == 200, response.text
    decode = run_cdc(*DECODE_AVRO, stdin=_avro_line(schema, response.json()["id"], f"{name}.public.klines"),
                     timeout=60)
    assert decode.code == 0, decode
    assert json.loads(decode.stdout)["after"] == AFTER_JSON
    with pytest.raises(requests.ConnectionError):  # the port speaks TLS only
        requests.get(url.replace("https://", "http://") + "/subjects", timeout=10)


@contextmanager
def basic_auth_registry(tls_dir: Path, user: str, password: str, schemas: dict[int, dict]) -> Iterator[str]:
    """A registry of our own over HTTPS (the stack's server certificate) with basic auth: Apicurio 2.6 needs
    an OIDC server for basic auth. Serves GET /schemas/ids/{id}; 401 without the right credentials."""
    expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            match = re.fullmatch(r"/schemas/ids/(\d+)", self.path)
            if self.headers.get("Authorization") != expected:
                self._answer(401, b"", {"WWW-Authenticate": 'Basic realm="registry"'})
            elif match and int(match.group(1)) in schemas:
                self._answer(200, json.dumps({"schema": json.dumps(schemas[int(match.group(1))])}).encode())
            else:
                self._answer(404, b'{"error_code": 40403, "message": "Schema not found"}')

        def _answer(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for key, value in {"Content-Type": "application/json", **(headers or {})}.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls_dir / "server.crt", tls_dir / "server.key")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_registry_basic_auth_from_the_environment_or_the_url_over_https(secure_stack, run_cdc):
    tls_dir = secure_stack.state_dir / "secure" / "tls"
    password, wrong = f"registry-{token_hex(12)}", f"wrong-registry-{token_hex(12)}"
    EXTRA_SECRETS.update({"registry password": password, "wrong registry password": wrong})
    schema = envelope_schema(unique_name("auth"))
    line = _avro_line(schema, 7, "auth.public.klines")
    with basic_auth_registry(tls_dir, "reader", password, {7: schema}) as url:
        env = {"CDC_SCHEMA_REGISTRY_URL": url, "CDC_SCHEMA_REGISTRY_CA": str(tls_dir / "ca.crt"),
               "CDC_SCHEMA_REGISTRY_USERNAME": "reader", "CDC_SCHEMA_REGISTRY_PASSWORD": password}
        from_env = run_cdc(*DECODE_AVRO, env=env, stdin=line, timeout=60)
        in_url = run_cdc(*DECODE_AVRO, stdin=line, timeout=60, env={
            **env, "CDC_SCHEMA_REGISTRY_URL": url.replace("https://", f"https://reader:{password}@"),
            "CDC_SCHEMA_REGISTRY_USERNAME": "", "CDC_SCHEMA_REGISTRY_PASSWORD": ""})
        refused = run_cdc(*DECODE_AVRO, env={**env, "CDC_SCHEMA_REGISTRY_PASSWORD": wrong}, stdin=line, timeout=60)
    for accepted in (from_env, in_url):
        assert accepted.code == 0, accepted
        assert json.loads(accepted.stdout)["after"] == AFTER_JSON
    assert refused.code == 1 and refused.seconds < 30, refused
    assert "schema registry https://" in refused.output and "HTTP 401" in refused.output, refused
    assert "Traceback" not in refused.output, refused


# --- the Avro connector on the secured stack -----------------------------------------------------------

def test_avro_connector_serialises_through_the_https_registry_and_decodes_over_sasl_ssl(secure_env, run_cdc):
    """Connect's Apicurio converter trusts the stack's CA (CDC_CONNECTOR_REGISTRY_CA in secure.env): a row
    written in PostgreSQL comes out of Kafka (SASL_SSL) as Avro that `cdc decode --format avro` reads back."""
    name = unique_name("savro")
    symbol = name.upper()  # unique: earlier rows of the table (the pipeline's) are told apart
    assert run_cdc("init", "--skip-cassandra").code == 0, run_cdc.outputs[-1]
    register = run_cdc("register-connector", "--format", "avro", "--name", name, "--timeout", "120",
                       "--set", f"slot.name={name}", "--set", f"topic.prefix={name}",
                       "--set", "table.include.list=public.ticker_24h")
    try:
        assert register.code == 0, register
        with psycopg.connect(**_settings(secure_env).postgres.connect_kwargs(), autocommit=True) as conn:
            conn.execute("INSERT INTO ticker_24h (symbol, event_time, last_price) VALUES (%s, %s, %s)",
                         (symbol, "2026-11-30T12:00:00Z", Decimal("97123.12345678")))

        connect = ConnectClient(secure_env["CDC_CONNECT_URL"], auth=_settings(secure_env).connect_auth)

        def decoded_row():
            # A converter that cannot reach the registry fails its task at the first record: stop there.
            for what, trace in connect.status(name).failures:
                pytest.fail(f"{what} FAILED: {trace_head(trace)}", pytrace=False)
            decode = run_cdc("decode", "--format", "avro", "--topic", f"{name}.public.ticker_24h",
                             "--from-beginning", "--timeout", "5", timeout=60)
            assert "Traceback" not in decode.output, decode
            rows = [json.loads(line) for line in decode.stdout.splitlines()]
            return next((row for row in rows if (row.get("after") or {}).get("symbol") == symbol), None)

        row = wait_until(decoded_row, timeout=60, interval=1, what="the Avro record of the inserted row")
        assert row["after"]["last_price"] == "97123.12345678", row
        assert row["after"]["event_time"].startswith("2026-11-30T12:00:00"), row
        # The converters were given the CA by path on the worker: nothing else about TLS is stored.
        stored = ConnectClient(secure_env["CDC_CONNECT_URL"], auth=_settings(secure_env).connect_auth).get_config(name)
        for side in ("key", "value"):
            assert stored[f"{side}.converter.apicurio.rest.request.ssl.ca-bundle.location"] == \
                secure_env["CDC_CONNECTOR_REGISTRY_CA"]
    finally:
        run_cdc("connector", "delete", name, "--drop-slot", "--yes")


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
            "CDC_CONNECT_CA", "CDC_CASSANDRA_USERNAME", "CDC_CASSANDRA_PASSWORD", "CDC_CASSANDRA_SSL_CA",
            "CDC_CASSANDRA_SSL_CERT", "CDC_CASSANDRA_SSL_KEY", "CDC_CASSANDRA_SSL_KEY_PASSWORD",
            "CDC_SCHEMA_REGISTRY_URL", "CDC_SCHEMA_REGISTRY_CA",
            "CDC_CONNECTOR_REGISTRY_CA"} <= names
    client = read_env_file(env_file)
    assert "BEGIN ENCRYPTED PRIVATE KEY" in Path(client["CDC_CASSANDRA_SSL_KEY"]).read_text()  # needs the passphrase
    status = subprocess.run([str(STACK), "status", *SERVICES], capture_output=True, text=True, env=secure_stack.stack_env(),
                            timeout=120)
    assert status.returncode == 0 and status.stdout.startswith("mode: secure"), status.stdout + status.stderr
    rows = {fields[0]: fields for fields in map(str.split, status.stdout.splitlines()[1:]) if fields}
    # name, state, pid=N, host:port, ready, rss=NMB
    assert rows["registry"][3:5] == [f"127.0.0.1:{client['CDC_REGISTRY_PORT']}", "ready"], status.stdout


# --- no secret anywhere ----------------------------------------------------------------------------

def _pg_keyword_dsn(env: dict[str, str], password: str) -> str:
    return (f"host=127.0.0.1 port={env['CDC_PG_PORT']} dbname=cdc user=cdc password={password} "
            f"sslmode=verify-full sslrootcert={env['CDC_PG_SSLROOTCERT']}")


def _run_with_credentials_inside_a_dsn_and_a_url(env: dict[str, str], run_cdc, name: str) -> None:
    """Verbs given the PostgreSQL password inside the DSN and Connect's credentials inside the URL (and
    no password variable), accepted and refused; their outputs join the search."""
    wrong_pg, wrong_connect = f"wrong-dsn-{token_hex(12)}", f"wrong-url-{token_hex(12)}"
    EXTRA_SECRETS.update({"wrong password inside a DSN": wrong_pg, "wrong password inside a URL": wrong_connect})
    in_dsn = {"CDC_PG_DSN": _pg_keyword_dsn(env, env["CDC_PG_PASSWORD"]), "CDC_PG_PASSWORD": ""}
    accepted = run_cdc("init", "--skip-cassandra", "--skip-kafka", env=in_dsn)
    assert accepted.code == 0, accepted
    run_cdc("status", "--json", "--connector", name, "--group", f"{name}-group", env=in_dsn)
    refused = run_cdc("init", "--skip-cassandra", "--skip-kafka", env={**in_dsn, "CDC_PG_DSN": (
        f"postgresql://cdc:{wrong_pg}@127.0.0.1:{env['CDC_PG_PORT']}/cdc"
        f"?sslmode=verify-full&sslrootcert={env['CDC_PG_SSLROOTCERT']}")})
    assert refused.code != 0 and "password authentication failed" in refused.output, refused

    def in_url(password: str) -> dict[str, str]:
        url = env["CDC_CONNECT_URL"].replace("https://", f"https://admin:{password}@")
        return {"CDC_CONNECT_URL": url, "CDC_CONNECT_USERNAME": "", "CDC_CONNECT_PASSWORD": ""}

    accepted = run_cdc("connector", "status", name, env=in_url(env["CDC_CONNECT_PASSWORD"]))
    assert accepted.code == 0, accepted
    refused = run_cdc("connector", "status", name, env=in_url(wrong_connect))
    assert refused.code != 0 and "HTTP 401" in refused.output, refused


def _metrics(port: int) -> str | None:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except (urllib.error.URLError, OSError):
        return None


def _poller_metrics_and_log(env: dict[str, str], sim_url: str, log_path: Path) -> tuple[str, str]:
    """A running `cdc poll` (the password inside its DSN): its /metrics after a cycle, and its output."""
    port = _free_port()
    with open(log_path, "w") as log:
        poller = subprocess.Popen(
            [CDC, "poll", "--symbols", SYMBOLS, "--interval", "2s", "--klines", "1m", "--depth", "5", "--trades", "10",
             "--base-url", sim_url, "--metrics-port", str(port)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            env={**env, "CDC_PG_DSN": _pg_keyword_dsn(env, env["CDC_PG_PASSWORD"]), "CDC_PG_PASSWORD": ""})
    try:
        metrics = wait_until(lambda: (text := _metrics(port)) and re.search(r"^cdc_poller_cycles_total [1-9]", text, re.M)
                             and text, timeout=120, what="the poller's /metrics after one cycle")
    finally:
        poller.send_signal(signal.SIGTERM)
        poller.wait(60)
    return metrics, log_path.read_text()


def test_no_secret_appears_in_any_output(pipeline, secrets, run_cdc, secure_env, tmp_path):
    consumer = pipeline["consumer"]
    consumer.send_signal(signal.SIGTERM)
    assert consumer.wait(90) == 0
    SEEN["consume log"] = pipeline["log"].read_text()
    assert '"message"' in SEEN["consume log"]  # the JSON log lines are there to be searched
    _run_with_credentials_inside_a_dsn_and_a_url(secure_env, run_cdc, pipeline["name"])
    SEEN["poller metrics"], SEEN["poll log"] = _poller_metrics_and_log(secure_env, pipeline["sim_url"],
                                                                      tmp_path / "poll.log")
    assert "cdc_poller_rows_written_total" in SEEN["poller metrics"]
    outputs = {f"cdc {' '.join(r.args)}": r.output for r in run_cdc.outputs} | SEEN
    assert {"status --json", "metrics", "dlq headers", "consume log", "poller metrics"} <= set(SEEN), sorted(SEEN)
    searched = secrets | EXTRA_SECRETS
    assert {"CASSANDRA_CLIENT_KEY_PASSWORD", "wrong password inside a DSN", "wrong password inside a URL"} <= set(searched)
    for where, text in outputs.items():
        for name, value in searched.items():
            assert value not in text, f"{name} appears in the output of {where}"
