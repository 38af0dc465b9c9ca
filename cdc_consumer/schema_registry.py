"""Where Avro writer schemas come from: a Confluent-compatible registry over HTTP, or a file.

The decoder's only I/O. `RegistryClient` asks `GET /schemas/ids/{id}` (or `/schemas/guids/{guid}`) once
per id and caches the parsed schema; failures are not cached, so a registry that comes back is used again.
Basic auth (`CDC_SCHEMA_REGISTRY_USERNAME`/`_PASSWORD`, or `https://user:password@host` in the URL, split
off at once) and a CA of one's own (`CDC_SCHEMA_REGISTRY_CA`); messages name the URL without the password.
`SchemaFile` reads the format of the fixtures' `pg_avro_confluent.schemas.json` (`schemas_by_id`).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import requests

from cdc_consumer.config import HttpAuth
from cdc_consumer.errors import (
    ClassifiedError,
    PermanentRecordError,
    RegistryUnavailable,
    SchemaError,
    SchemaRef,
    TransientError,
    UnknownSchemaId,
)
from cdc_consumer.http_errors import request_failure
from cdc_consumer.secrets import mask_text, mask_url, redact, split_url_credentials


def _parse_answer(ref: SchemaRef, answer: Any) -> Any:
    """The Avro schema in a registry answer `{"schema": "<json text>", "schemaType"?: "AVRO"}`."""
    if not isinstance(answer, dict) or not isinstance(answer.get("schema"), str):
        raise RegistryUnavailable(f"schema {ref}: the registry's answer has no 'schema' text: {answer!r:.120}")
    schema_type = answer.get("schemaType", "AVRO")
    if schema_type != "AVRO":
        raise SchemaError(f"schema {ref} is {schema_type}, not AVRO")
    try:
        return json.loads(answer["schema"])
    except ValueError as exc:
        raise SchemaError(f"schema {ref} is not JSON: {exc}") from None


class RegistryClient:
    """A small Confluent Schema Registry client: fetch-once, cache-forever per schema id."""

    def __init__(self, url: str, *, timeout: float = 5.0, session: requests.Session | None = None,
                 auth: HttpAuth | None = None) -> None:
        clean, user, password = split_url_credentials(url.rstrip("/"))
        auth = auth or HttpAuth()
        if user is not None:
            auth = HttpAuth(user, password, auth.ca)
        self._url = clean
        self._shown_url = mask_url(self._url)  # what messages (and DLQ headers) may show
        self._timeout = timeout
        self._session = session or requests.Session()
        self._secrets = tuple(s for s in (auth.password,) if s)
        # Passed with every request: a session-level `verify` would lose to REQUESTS_CA_BUNDLE in the environment.
        self._auth_kwargs = auth.requests_kwargs()
        self._cache: dict[SchemaRef, Any] = {}

    def schema(self, ref: SchemaRef) -> Any:
        cached = self._cache.get(ref)
        if cached is None:
            cached = self._cache[ref] = _parse_answer(ref, self._get(ref))
        return cached

    def _get(self, ref: SchemaRef) -> Any:
        path = f"/schemas/guids/{ref}" if isinstance(ref, uuid.UUID) else f"/schemas/ids/{ref}"
        try:
            response = self._session.get(self._url + path, timeout=self._timeout, **self._auth_kwargs,
                                         headers={"Accept": "application/vnd.schemaregistry.v1+json"})
        except requests.RequestException as exc:
            kind = "TLS failed" if isinstance(exc, requests.exceptions.SSLError) else "unreachable"
            reason = request_failure(exc, "CDC_SCHEMA_REGISTRY_CA")
            raise RegistryUnavailable(f"schema registry {self._shown_url} {kind}: "
                                      f"{mask_text(redact(reason, self._secrets))[:300]}") from None
        if response.status_code in (401, 403):
            raise RegistryUnavailable(f"schema registry {self._shown_url} refused the request: HTTP {response.status_code} "
                                      "(set CDC_SCHEMA_REGISTRY_USERNAME/CDC_SCHEMA_REGISTRY_PASSWORD)")
        if response.status_code == 404:
            raise UnknownSchemaId(f"schema registry {self._shown_url} has no schema {ref}")
        if response.status_code != 200:
            raise RegistryUnavailable(f"schema registry {self._shown_url} answered HTTP {response.status_code} "
                                      f"for {path}: {response.text[:200]}")
        try:
            return response.json()
        except ValueError:
            raise RegistryUnavailable(f"schema registry {self._shown_url} answered non-JSON for {path}") from None


class SchemaFile:
    """Schemas from a JSON file `{"schemas_by_id": {"1": <avro schema or its JSON text>, ...}}`."""

    def __init__(self, path: str | Path) -> None:
        self._path = Path(path)
        try:
            document = json.loads(self._path.read_text(encoding="utf-8"))
            by_id = document["schemas_by_id"]
            self._schemas = {int(sid): self._parsed(schema) for sid, schema in by_id.items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"{self._path}: not a schemas file with 'schemas_by_id': {exc}") from None

    @staticmethod
    def _parsed(schema: Any) -> Any:
        if not isinstance(schema, str):
            return schema
        try:
            return json.loads(schema)
        except ValueError:
            return schema  # a bare primitive name such as `string`

    def schema(self, ref: SchemaRef) -> Any:
        if isinstance(ref, uuid.UUID) or ref not in self._schemas:
            raise UnknownSchemaId(f"{self._path} has no schema {ref}")
        return self._schemas[ref]


def classify_registry_error(exc: Exception) -> ClassifiedError:
    """Registry edge: unreachable or 5xx -> transient (pause, retry the record, no DLQ); an id it does
    not know (404) -> permanent for that record (DLQ)."""
    if isinstance(exc, UnknownSchemaId):
        return PermanentRecordError(str(exc), edge="registry", reason="unknown_schema_id", error_class=type(exc).__name__)
    return TransientError(str(exc), edge="registry", reason="registry_unavailable", error_class=type(exc).__name__)
