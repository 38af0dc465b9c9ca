"""Connector config templates: load, substitute `${VAR}` / `${VAR:-default}`, override, mask, diff.

A template is the Kafka Connect create body `{"name": ..., "config": {...}}` (a flat config map with a
`name` key is accepted too). Values may reference environment variables:

- `${VAR}` must be set (an unset variable is an error naming it and the property);
- `${VAR:-default}` falls back to `default` when VAR is unset or empty (as in the shell); the default
  may be another placeholder.

Anything else that looks like `${...}` — e.g. Kafka Connect config-provider references such as
`${file:/etc/cdc/pg.properties:password}` — is left untouched for the worker to resolve, which is the
way to keep the password out of Connect's config topic as well.

A property that resolves to the empty string is left out, so Connect's default applies (an empty
`CDC_PG_PASSWORD` with trust authentication sends no password at all). Secrets are masked in every
rendering meant for people.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import orjson

from cdc_consumer.secrets import MASK, is_secret, mask

__all__ = ["MASK", "is_secret", "mask"]  # the project's one secret rule, re-exported for connector code

DEFAULT_TEMPLATE = "postgres.json"
AVRO_TEMPLATE = "postgres-avro.json"

# A default may itself be one placeholder: `${CDC_CONNECTOR_PG_PASSWORD:-${CDC_PG_PASSWORD:-}}`.
_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-((?:[^{}]|\$\{[^{}]*\})*))?\}")


class ConfigError(ValueError):
    """A template or override that cannot produce a connector config; the message names the culprit."""


@dataclass(frozen=True)
class ConnectorConfig:
    name: str
    config: dict[str, str]

    @property
    def connector_class(self) -> str:
        return self.config.get("connector.class", "")

    def masked(self) -> dict[str, str]:
        return mask(self.config)


@dataclass(frozen=True)
class Change:
    key: str
    old: str | None  # None: the property is new
    new: str | None  # None: the property is removed

    def describe(self) -> str:
        """One line for people; secret values never appear, only that they changed."""
        if is_secret(self.key):
            verb = "added" if self.old is None else "removed" if self.new is None else "changed"
            return f"{self.key}: {MASK} ({verb})"
        if self.old is None:
            return f"+ {self.key} = {self.new}"
        if self.new is None:
            return f"- {self.key} (was {self.old})"
        return f"~ {self.key}: {self.old} -> {self.new}"



def template_path(name: str = DEFAULT_TEMPLATE) -> Path:
    """Path of a template shipped in the `connectors` package."""
    return Path(str(resources.files("connectors") / name))


def load_template(path: str | Path | None = None) -> dict:
    """The raw template (placeholders unresolved) from `path`, or the default one."""
    path = Path(path) if path else template_path()
    try:
        data = orjson.loads(path.read_bytes())
    except FileNotFoundError as exc:
        raise ConfigError(f"connector config {path} does not exist") from exc
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"connector config {path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"connector config {path} must be a JSON object")
    return data


def substitute(value: str, env: Mapping[str, str], *, key: str = "value") -> str:
    def replace(match: re.Match) -> str:
        var, default = match.group(1), match.group(2)
        current = env.get(var)
        if default is not None:
            return current if current else substitute(default, env, key=key)
        if current is None:
            raise ConfigError(f"{key}: environment variable {var} is not set (referenced as ${{{var}}})")
        return current

    return _PLACEHOLDER.sub(replace, value)


def parse_overrides(pairs: Iterable[str]) -> dict[str, str]:
    """`key=value` strings from `--set` into a dict; an empty value removes the property."""
    overrides: dict[str, str] = {}
    for number, pair in enumerate(pairs, 1):
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            # The text is not echoed: without its `=` we cannot tell a key from a secret value.
            raise ConfigError(f"--set argument {number} ({len(pair)} characters, not shown) is not key=value")
        overrides[key] = value
    return overrides


def render(template: Mapping, env: Mapping[str, str], *, overrides: Mapping[str, str] | None = None,
           name: str | None = None) -> ConnectorConfig:
    """Resolve a template into the exact config that is sent to Connect (including its `name`)."""
    raw = template.get("config", template)
    if not isinstance(raw, Mapping):
        raise ConfigError("connector config: `config` must be a JSON object of properties")
    config: dict[str, str] = {}
    for key, value in raw.items():
        if key == "name":
            continue
        resolved = substitute(_as_text(key, value), env, key=key)
        if resolved != "":
            config[key] = resolved
    for key, value in (overrides or {}).items():
        if value == "":
            config.pop(key, None)
        else:
            config[key] = value
    connector_name = name or substitute(_as_text("name", template.get("name", raw.get("name", ""))), env, key="name")
    if not connector_name:
        raise ConfigError("connector config has no name: add \"name\" to the file or pass --name")
    if not config.get("connector.class"):
        raise ConfigError("connector config has no connector.class")
    config["name"] = connector_name
    return ConnectorConfig(connector_name, config)


def diff(current: Mapping[str, str] | None, desired: Mapping[str, str]) -> list[Change]:
    """Property changes from what Connect has (`None`: nothing yet) to what we want, sorted by key."""
    current = current or {}
    keys = sorted(set(current) | set(desired))
    return [Change(k, current.get(k), desired.get(k)) for k in keys if current.get(k) != desired.get(k)]


def _as_text(key: str, value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int)):
        return str(value)
    raise ConfigError(f"{key}: property values must be strings, numbers or booleans, not {type(value).__name__}")
