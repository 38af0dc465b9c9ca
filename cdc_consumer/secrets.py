"""The one place that decides what is a secret and hides it: config keys, URLs, DSNs, free text.

Every message, log line, `cdc status --json` document, connector diff, metric and DLQ header that may
carry a credential goes through these helpers, so the rule is the same on every edge:
- a key is secret when it ends in `password`, `passwd`, `pwd`, `secret`, `token` or `passphrase` (with or
  without a separator: `sslpassword`, `database.password`, `client_secret`, `accessToken`), or names a
  credential blob: `sasl.jaas.config`, `basic.auth.user.info`, `credentials`, `api.key`/`apikey`,
  `private.key`, `ssl.keystore.key`, `ssl.key.pem`;
- in a URL, the user-info password and the values of secret query parameters are masked; a URL's
  credentials can also be split off to be used as basic auth;
- in a DSN (key=value or URL form), every secret key's value is masked;
- free text has every `scheme://user:password@` and `secret_key=value` masked (`mask_text`), and known
  secret values replaced (`redact`).
A value is never printed; at most the fact that it is set (or changed).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

MASK = "********"

# Matched against the end of a key; `key.converter` or `ssl.key.location` are not secrets.
_SECRET_KEY = re.compile(
    r"(password|passwd|pwd|secret|token|passphrase|credentials?|jaas\.config|user\.info|"
    r"(^|[._-])api[._-]?key|apikey|private[._-]?key|keystore\.key|ssl\.key\.pem)$",
    re.IGNORECASE)
# scheme://user:password@ anywhere in a text (the password stops at @, / or whitespace)
_URL_CREDENTIALS = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*:)[^@/\s]*@")
# key=value anywhere in a text (a DSN, a query string, a client's error message); masked when the key is secret
_ASSIGNMENT = re.compile(r"(?<![\w.-])([\w.-]+)=([^&\s;,'\"]+)")


def is_secret(key: str) -> bool:
    """Whether a config/DSN/query key holds a credential (matched on how the key ends)."""
    return bool(_SECRET_KEY.search(key.strip()))


def mask(config: Mapping[str, Any]) -> dict[str, Any]:
    """The mapping with every non-empty secret value replaced by MASK."""
    return {k: (MASK if is_secret(k) and v else v) for k, v in config.items()}


def split_url_credentials(url: str) -> tuple[str, str | None, str | None]:
    """`https://user:pw@host:port/path` -> (`https://host:port/path`, user, pw); other URLs unchanged."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, None, None
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    clean = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return clean, unquote(parts.username or ""), (unquote(parts.password) if parts.password is not None else None)


def mask_url(url: str) -> str:
    """The URL with its user-info password and secret query values masked (the user name stays)."""
    try:
        parts = urlsplit(url)
        port = parts.port  # noqa: F841 - raises ValueError for a malformed port
    except ValueError:
        return mask_text(url)
    netloc = parts.netloc
    if parts.password is not None:
        user_info, _, host = netloc.rpartition("@")
        netloc = f"{user_info.partition(':')[0]}:{MASK}@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(is_secret(k) for k, _ in pairs):
            query = urlencode([(k, MASK if is_secret(k) else v) for k, v in pairs], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def mask_text(text: str) -> str:
    """Free text with every `scheme://user:password@` credential and every `secret_key=value` masked."""
    text = _URL_CREDENTIALS.sub(lambda m: f"{m.group(1)}{MASK}@", text)
    return _ASSIGNMENT.sub(lambda m: f"{m.group(1)}={MASK}" if is_secret(m.group(1)) else m.group(0), text)


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """`text` with every occurrence of each (non-trivial) known secret value replaced by the mask."""
    for secret in sorted({s for s in secrets if s and len(s) >= 3}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def mask_dsn(dsn: str) -> str:
    """A PostgreSQL DSN (key=value or URL) with every secret parameter masked; `<unparsable DSN>` when
    it cannot be parsed (its text is then never shown: it may hold a password anywhere)."""
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    try:
        params = conninfo_to_dict(dsn)
    except ProgrammingError:
        return "<unparsable DSN>"
    return make_conninfo(**mask(params))


def mask_deep(value: Any) -> Any:
    """A JSON-like document with URL credentials masked in every string and secret keys' values masked."""
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, Mapping):
        return {k: (MASK if isinstance(k, str) and is_secret(k) and v else mask_deep(v)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [mask_deep(v) for v in value]
    return value
