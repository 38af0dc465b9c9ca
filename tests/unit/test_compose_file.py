"""compose/docker-compose.yml: every service is health-checked and started in health order, publishes
on loopback only, carries no credential inline, and every variable it reads is documented in .env.example.

Each rule is a small function returning the problems it finds, checked against the real file (no
problems) and against a deliberately bad document (the problem is named), so every rule can fail.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "compose" / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"

EXPECTED_SERVICES = {"postgres", "kafka", "connect", "schema-registry", "cassandra", "grafana"}
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


def missing_healthchecks(doc: dict) -> list[str]:
    return [name for name, svc in _services(doc).items()
            if not (svc.get("healthcheck") or {}).get("test") or (svc.get("healthcheck") or {}).get("disable")]


def dependencies_not_waiting_for_health(doc: dict) -> list[str]:
    problems = []
    for name, svc in _services(doc).items():
        depends = svc.get("depends_on") or {}
        if isinstance(depends, list):  # short form means "started", not "healthy"
            depends = {dep: {} for dep in depends}
        for dep, spec in depends.items():
            if dep not in _services(doc):
                problems.append(f"{name} -> {dep} (no such service)")
            elif (spec or {}).get("condition") != "service_healthy":
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


def test_every_service_has_a_healthcheck(compose):
    assert missing_healthchecks(compose) == []


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


def test_env_example_rules_name_missing_and_filled_entries():
    env = "# API_TOKEN=\nDB_PASSWORD=\nGRAFANA_PASSWORD=s3cret\n"
    assert variables_missing_from_env_example(BAD_COMPOSE + "x: $${ESCAPED}", env) == ["API_TOKEN"]
    assert secrets_with_values_in_env_example(env) == ["GRAFANA_PASSWORD"]
