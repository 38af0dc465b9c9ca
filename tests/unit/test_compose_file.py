"""compose/docker-compose.yml: every long-running service is health-checked and restarted, services start
in health order (one-shot jobs: once they exited 0), publish on loopback only, carry no credential inline,
every variable it reads is documented in .env.example; the pipeline services run the project image
(../Dockerfile: multi-stage, pinned base, non-root) with commands the real CLI accepts, Prometheus scrapes
the consumer and Grafana gets its provisioning.

Each rule is a small function returning the problems it finds, checked against the real file (no
problems) and against a deliberately bad document (the problem is named), so every rule can fail.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import click
import pytest
import yaml

from cdc_cli.cli import main as cdc_cli

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "compose" / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"

COMPOSE_DIR = COMPOSE_FILE.parent
DOCKERFILE = ROOT / "Dockerfile"
PROMETHEUS_DIR = COMPOSE_DIR / "prometheus"
GRAFANA_DATASOURCES = ROOT / "grafana" / "provisioning" / "datasources" / "datasources.yaml"
GRAFANA_PROVIDERS = ROOT / "grafana" / "provisioning" / "dashboards" / "dashboards.yaml"

EXPECTED_SERVICES = {"postgres", "kafka", "connect", "registry", "cassandra", "grafana", "alertmanager"}
PIPELINE_SERVICES = {"init", "register-connector", "binance-sim", "poll", "consume", "prometheus"}
PROJECT_SERVICES = PIPELINE_SERVICES - {"prometheus"}
LONG_RUNNING_RESTARTS = {"always", "unless-stopped", "on-failure"}
# Whole words of a key: API_TOKEN is a secret, CASSANDRA_NUM_TOKENS is not.
SECRET_KEY = re.compile(r"(?:^|_)(?:PASSWORD|PASSWD|SECRET|TOKEN|API_?KEY|CREDENTIALS?)(?:_|$)", re.IGNORECASE)
# `${NAME}`, `${NAME:-default}`, `${NAME:?message}`; `$${...}` is an escaped literal dollar.
VARIABLE_REFERENCE = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)")
# An uncommented `NAME=value` line of .env.example.
ENV_ASSIGNMENT = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)=(.*)$", re.MULTILINE)
WHOLE_REFERENCE = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*(?:[:]?[-?][^}]*)?\}$")


def _services(doc: dict) -> dict:
    return doc.get("services") or {}


def _environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def one_shot_services(doc: dict) -> set[str]:
    """Jobs that run once and exit (`restart: "no"`): waited for by exit code, not by a healthcheck."""
    return {name for name, svc in _services(doc).items() if svc.get("restart") == "no"}


def missing_healthchecks(doc: dict) -> list[str]:
    one_shot = one_shot_services(doc)
    return [name for name, svc in _services(doc).items() if name not in one_shot and (
        not (svc.get("healthcheck") or {}).get("test") or (svc.get("healthcheck") or {}).get("disable"))]


def missing_restart_policies(doc: dict) -> list[str]:
    one_shot = one_shot_services(doc)
    return [name for name, svc in _services(doc).items()
            if name not in one_shot and str(svc.get("restart", "")).split(":")[0] not in LONG_RUNNING_RESTARTS]


def dependencies_not_waiting_for_health(doc: dict) -> list[str]:
    """A dependency is waited for until healthy, or, for a one-shot job, until it exited 0."""
    problems = []
    one_shot = one_shot_services(doc)
    for name, svc in _services(doc).items():
        depends = svc.get("depends_on") or {}
        if isinstance(depends, list):  # short form means "started", not "healthy"
            depends = {dep: {} for dep in depends}
        for dep, spec in depends.items():
            expected = "service_completed_successfully" if dep in one_shot else "service_healthy"
            if dep not in _services(doc):
                problems.append(f"{name} -> {dep} (no such service)")
            elif (spec or {}).get("condition") != expected:
                problems.append(f"{name} -> {dep}")
    return problems


def inline_secrets(doc: dict) -> list[str]:
    return [f"{name}.{key}" for name, svc in _services(doc).items()
            for key, value in _environment(svc).items()
            if SECRET_KEY.search(key) and not WHOLE_REFERENCE.match(value)]


def ports_not_on_loopback(doc: dict) -> list[str]:
    problems = []
    for name, svc in _services(doc).items():
        for port in svc.get("ports") or []:
            host_ip = port.get("host_ip") if isinstance(port, dict) else (
                str(port).split(":", 1)[0] if str(port).count(":") >= 2 else None)
            if host_ip != "127.0.0.1":
                problems.append(f"{name}: {port}")
    return problems


def undeclared_named_volumes(doc: dict) -> list[str]:
    declared = set(doc.get("volumes") or {})
    problems = []
    for name, svc in _services(doc).items():
        for volume in svc.get("volumes") or []:
            source = volume.get("source") if isinstance(volume, dict) else str(volume).split(":", 1)[0]
            if source and not source.startswith((".", "/", "~", "$")) and source not in declared:
                problems.append(f"{name}: {source}")
    return problems


def missing_bind_sources(doc: dict, base: Path) -> list[str]:
    """Bind-mounted paths (relative to the compose file) that do not exist in the repository."""
    problems = []
    for name, svc in _services(doc).items():
        for volume in svc.get("volumes") or []:
            source = volume.get("source") if isinstance(volume, dict) else str(volume).split(":", 1)[0]
            if source.startswith(".") and not (base / source).exists():
                problems.append(f"{name}: {source}")
    return problems


def dockerfile_problems(text: str) -> list[str]:
    """Multi-stage, every base image pinned to a full version tag, the final stage runs as non-root."""
    stages = re.findall(r"^FROM\s+(\S+)", text, re.MULTILINE | re.IGNORECASE)
    problems = [] if len(stages) >= 2 else ["not a multi-stage build"]
    problems += [f"base image {image} is not pinned to a full version"
                 for image in stages if not re.search(r":\d+\.\d+\.\d+[\w.-]*$", image)]
    final_stage = re.split(r"^FROM\s", text, flags=re.MULTILINE | re.IGNORECASE)[-1]
    users = re.findall(r"^USER\s+(\S+)", final_stage, re.MULTILINE | re.IGNORECASE)
    if not users or users[-1].split(":")[0] in ("root", "0"):
        problems.append("the final stage runs as root")
    return problems


def interpolate(value: str) -> str:
    """Compose interpolation with the defaults written in the file (`${VAR:-default}`; `${VAR:?}` -> x)."""
    return re.sub(r"(?<!\$)\$\{[A-Za-z_][A-Za-z0-9_]*(?::?-([^}]*)|:?\?[^}]*)?\}", lambda m: m.group(1) or "x",
                  value)


def variables_missing_from_env_example(compose_text: str, env_example_text: str) -> list[str]:
    documented = {m.group(1) for m in ENV_ASSIGNMENT.finditer(env_example_text)}
    return sorted(set(VARIABLE_REFERENCE.findall(compose_text)) - documented)


def secrets_with_values_in_env_example(env_example_text: str) -> list[str]:
    return [m.group(1) for m in ENV_ASSIGNMENT.finditer(env_example_text)
            if SECRET_KEY.search(m.group(1)) and m.group(2).strip()]


@pytest.fixture(scope="module")
def compose_text() -> str:
    return COMPOSE_FILE.read_text()


@pytest.fixture(scope="module")
def compose(compose_text: str) -> dict:
    return yaml.safe_load(compose_text)


def test_the_stack_has_every_service(compose):
    assert EXPECTED_SERVICES <= set(_services(compose))


def test_every_long_running_service_has_a_healthcheck(compose):
    assert missing_healthchecks(compose) == []


def test_every_long_running_service_restarts(compose):
    assert missing_restart_policies(compose) == []




def test_registry_and_converter_are_the_native_stacks_release_and_pom(compose):
    """No drift between the two setups: the Apicurio release of compose/native/stack, the converter
    resolved from the native stack's own pom (same release), mounted as a plugin dir of Connect."""
    native = (COMPOSE_DIR / "native" / "stack").read_text()
    version = re.search(r"^REGISTRY_VERSION=(\S+)$", native, re.MULTILINE).group(1)
    services = _services(compose)
    assert services["registry"]["image"] == f"apicurio/apicurio-registry-mem:{version}"
    pom = COMPOSE_DIR / "native" / "apicurio-converter" / "pom.xml"
    assert f"<artifactId>apicurio-registry-utils-converter</artifactId><version>{version}</version>" in pom.read_text()
    mounts = services["connect-plugins"]["volumes"]
    assert any((COMPOSE_DIR / m.split(":")[0]).resolve() == pom for m in mounts)
    plugin_volume = next(m.split(":")[0] for m in mounts if m.endswith(":/plugins"))
    assert f"{plugin_volume}:/kafka/connect/apicurio-converter" in services["connect"]["volumes"]
def test_the_one_shot_jobs_are_init_register_connector_connect_plugins_and_the_jmx_agent_download(compose):
    assert one_shot_services(compose) == {"init", "register-connector", "connect-plugins", "jmx-agent"}


def test_every_dependency_waits_for_health(compose):
    assert dependencies_not_waiting_for_health(compose) == []


def test_no_credential_is_written_inline(compose):
    assert inline_secrets(compose) == []


def test_ports_are_published_on_loopback_only(compose):
    assert ports_not_on_loopback(compose) == []


def test_named_volumes_are_declared(compose):
    assert undeclared_named_volumes(compose) == []


def test_images_are_pinned(compose):
    unpinned = [name for name, svc in _services(compose).items()
                if ":" not in svc.get("image", "").rsplit("/", 1)[-1] or svc["image"].endswith(":latest")]
    assert unpinned == []


def test_postgres_runs_with_logical_decoding(compose):
    assert "wal_level=logical" in " ".join(_services(compose)["postgres"]["command"])


def test_env_example_documents_every_variable(compose_text):
    assert variables_missing_from_env_example(compose_text, ENV_EXAMPLE.read_text()) == []


def test_env_example_holds_no_secret_value():
    assert secrets_with_values_in_env_example(ENV_EXAMPLE.read_text()) == []


def test_bind_mounted_files_exist(compose):
    assert missing_bind_sources(compose, COMPOSE_DIR) == []


def test_the_pipeline_runs_in_the_stack(compose):
    assert PIPELINE_SERVICES <= set(_services(compose))


def test_the_project_image_is_built_from_a_multi_stage_non_root_dockerfile(compose):
    assert dockerfile_problems(DOCKERFILE.read_text()) == []
    for name in PROJECT_SERVICES:
        build = _services(compose)[name]["build"]
        assert (COMPOSE_DIR / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE


@pytest.mark.parametrize("name", sorted(PROJECT_SERVICES))
def test_project_service_command_is_accepted_by_the_cdc_cli(compose, name, monkeypatch):
    service = _services(compose)[name]
    for key, value in _environment(service).items():
        monkeypatch.setenv(key, interpolate(value))
    verb, *arguments = (interpolate(part) for part in service["command"])
    command = cdc_cli.get_command(click.Context(cdc_cli), verb)
    assert command is not None, f"{name}: no `cdc {verb}`"
    command.make_context(f"cdc {verb}", arguments)  # raises a UsageError on an unknown or bad option


def test_prometheus_scrapes_the_consumer_metrics_port(compose):
    services = _services(compose)
    consume = services["consume"]["command"]
    port = consume[consume.index("--metrics-port") + 1]
    # prometheus.yml is shared with the native stack; this stack's targets are the files of targets/.
    scrape = {job["job_name"]: job for job in yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())[
        "scrape_configs"]}
    consume_files = [f for c in scrape["cdc-consume"]["file_sd_configs"] for f in c["files"]]
    targets = [t for pattern in consume_files for path in sorted(PROMETHEUS_DIR.glob(pattern))
               for group in json.loads(path.read_text()) for t in group["targets"]]
    assert targets == [f"127.0.0.1:{port}"]
    assert "./prometheus:/etc/prometheus:ro" in services["prometheus"]["volumes"]
    # `cdc consume` serves on loopback: Prometheus shares its network namespace, Grafana calls consume:9090.
    assert services["prometheus"]["network_mode"] == "service:consume"
    assert "--web.listen-address=:9090" in services["prometheus"]["command"]
    assert _environment(services["grafana"])["CDC_GRAFANA_PROMETHEUS_URL"] == "http://consume:9090"


def test_grafana_installs_the_cassandra_plugin_and_reads_the_provisioning(compose):
    grafana = _services(compose)["grafana"]
    environment = _environment(grafana)
    assert environment["GF_INSTALL_PLUGINS"].split()[0] == "hadesarchitect-cassandra-datasource"
    mounts = {volume.split(":")[1]: volume.split(":")[0] for volume in grafana["volumes"]}
    assert mounts["/etc/grafana/provisioning"] == "../grafana/provisioning"
    dashboards_path = yaml.safe_load(GRAFANA_PROVIDERS.read_text())["providers"][0]["options"]["path"]
    assert mounts[dashboards_path] == "../grafana/dashboards"
    values = " ".join(str(v) for ds in yaml.safe_load(GRAFANA_DATASOURCES.read_text())["datasources"]
                      for v in _leaves(ds))
    read = set(re.findall(r"\$\{(\w+)\}", values))
    assert read and read <= set(environment)


def _leaves(node):
    if isinstance(node, dict):
        for value in node.values():
            yield from _leaves(value)
    else:
        yield node


BAD_COMPOSE = """
services:
  db:
    image: postgres:15
    environment:
      POSTGRES_PASSWORD: hunter2
      API_TOKEN: ${API_TOKEN}
      NUM_TOKENS: 1
    ports: ["5432:5432", "0.0.0.0:1234:1234", "127.0.0.1:9999:9999"]
    volumes: [dbdata:/var/lib/postgresql/data, ./local:/x]
  app:
    image: app:1
    environment: ["DB_PASSWORD=${DB_PASSWORD:?set}", "GRAFANA_SECRET=plain"]
    depends_on: [db]
    healthcheck: {test: ["CMD", "true"]}
  worker:
    image: worker:1
    depends_on: {db: {condition: service_started}, ghost: {condition: service_healthy}}
    healthcheck: {test: ["CMD", "true"], disable: true}
"""


@pytest.fixture
def bad() -> dict:
    return yaml.safe_load(BAD_COMPOSE)


def test_rules_name_what_is_wrong_in_a_bad_file(bad):
    assert missing_healthchecks(bad) == ["db", "worker"]
    assert dependencies_not_waiting_for_health(bad) == ["app -> db", "worker -> db", "worker -> ghost (no such service)"]
    assert inline_secrets(bad) == ["db.POSTGRES_PASSWORD", "app.GRAFANA_SECRET"]
    assert ports_not_on_loopback(bad) == ["db: 5432:5432", "db: 0.0.0.0:1234:1234"]
    assert undeclared_named_volumes(bad) == ["db: dbdata"]
    assert missing_restart_policies(bad) == ["db", "app", "worker"]
    assert missing_bind_sources(bad, COMPOSE_DIR) == ["db: ./local"]


BAD_JOBS = """
services:
  migrate: {image: app:1, restart: "no"}
  server:
    image: app:1
    restart: always
    healthcheck: {test: ["CMD", "true"]}
    depends_on: {migrate: {condition: service_healthy}}
  worker:
    image: app:1
    restart: "on-failure:3"
    healthcheck: {test: ["CMD", "true"]}
    depends_on: {migrate: {condition: service_completed_successfully}, server: {condition: service_completed_successfully}}
"""


def test_one_shot_jobs_need_no_healthcheck_but_are_waited_for_by_exit_code():
    doc = yaml.safe_load(BAD_JOBS)
    assert one_shot_services(doc) == {"migrate"}
    assert missing_healthchecks(doc) == []
    assert missing_restart_policies(doc) == []
    assert dependencies_not_waiting_for_health(doc) == ["server -> migrate", "worker -> server"]


def test_dockerfile_rule_names_a_single_stage_unpinned_root_image():
    assert dockerfile_problems("FROM python:3.11-slim\nRUN pip install .\n") == [
        "not a multi-stage build", "base image python:3.11-slim is not pinned to a full version",
        "the final stage runs as root"]
    assert dockerfile_problems("FROM python:3.11.11-slim AS b\nUSER app\nFROM python:latest\nUSER 0\n") == [
        "base image python:latest is not pinned to a full version", "the final stage runs as root"]


def test_interpolation_uses_the_defaults_written_in_the_file():
    assert interpolate("--interval ${CDC_POLL_INTERVAL:-2s} ${PASSWORD:?set in .env} $${LITERAL}") == (
        "--interval 2s x $${LITERAL}")


def test_env_example_rules_name_missing_and_filled_entries():
    env = "# API_TOKEN=\nDB_PASSWORD=\nGRAFANA_PASSWORD=s3cret\n"
    assert variables_missing_from_env_example(BAD_COMPOSE + "x: $${ESCAPED}", env) == ["API_TOKEN"]
    assert secrets_with_values_in_env_example(env) == ["GRAFANA_PASSWORD"]


def test_alertmanager_reads_the_shared_config_and_gossips_with_no_one(compose):
    services = _services(compose)
    alertmanager = services["alertmanager"]
    assert "./alertmanager:/etc/alertmanager:ro" in alertmanager["volumes"]
    assert "--config.file=/etc/alertmanager/alertmanager.yml" in alertmanager["command"]
    assert "--cluster.listen-address=" in alertmanager["command"]
    am_files = [f for c in yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())["alerting"][
        "alertmanagers"] for sd in c["file_sd_configs"] for f in sd["files"]]
    targets = [t for f in am_files for group in json.loads((PROMETHEUS_DIR / f).read_text()) for t in group["targets"]]
    assert targets == ["alertmanager:9093"]


def test_the_java_services_load_the_jmx_agent_with_the_shared_rules_and_prometheus_scrapes_them(compose):
    services = _services(compose)
    pom = (COMPOSE_DIR / "native" / "jmx-exporter" / "pom.xml").read_text()
    version = re.search(r"<artifactId>jmx_prometheus_javaagent</artifactId><version>([^<]+)</version>", pom).group(1)
    scrape = {job["job_name"]: job for job in yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())[
        "scrape_configs"]}
    for name, variable in (("kafka", "KAFKA_OPTS"), ("connect", "KAFKA_OPTS"), ("cassandra", "JVM_EXTRA_OPTS")):
        service = services[name]
        agent = re.fullmatch(r"-javaagent:(\S+)=(\d+):(\S+)", _environment(service)[variable])
        assert agent, f"{name}: {variable}"
        jar, port, rules = agent.groups()
        assert jar.endswith(f"jmx_prometheus_javaagent-{version}.jar")
        mounts = {volume.split(":")[1]: volume.split(":")[0] for volume in service["volumes"]}
        assert mounts["/etc/jmx"] == "./jmx" and (COMPOSE_DIR / "jmx" / rules.rsplit("/", 1)[1]).exists()
        assert mounts[jar.rsplit("/", 1)[0]] == "jmx-agent"
        files = [f for c in scrape[name]["file_sd_configs"] for f in c["files"]]
        targets = [t for f in files for group in json.loads((PROMETHEUS_DIR / f).read_text()) for t in group["targets"]]
        assert targets == [f"{name}:{port}"]
    assert version in " ".join(services["jmx-agent"]["command"])
