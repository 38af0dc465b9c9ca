"""Secrets in configuration: which keys hold one, and how to keep their values out of every output.

One vocabulary for every edge: connector configs, Kafka client properties, URLs with credentials,
exception texts. A value is never printed; at most the fact that it is set (or changed).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from urllib.parse import unquote, urlsplit, urlunsplit

MASK = "********"

# Matched against the end of a property name; `key.converter` or `ssl.key.location` are not secrets.
_SECRET_KEY = re.compile(
    r"(^|[._-])(password|passwd|pwd|secret|token|credentials?|jaas\.config|user\.info|api\.key|passphrase)$"
    r"|sslpassword$|sasl\.oauthbearer\.client\.secret$|ssl\.key\.pem$",
    re.IGNORECASE)


def is_secret_key(key: str) -> bool:
    """True for keys whose values are secrets: *password, *secret, *token, sasl.jaas.config,
    basic.auth.user.info, sslpassword, ssl.key.pem, ..."""
    return bool(_SECRET_KEY.search(key))


def mask_mapping(config: Mapping[str, str]) -> dict[str, str]:
    """A copy with every secret value replaced by the mask (empty values stay empty)."""
    return {k: (MASK if is_secret_key(k) and v else v) for k, v in config.items()}


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


def masked_url(url: str) -> str:
    """The URL with any password inside it masked (user kept), for messages and logs."""
    clean, user, password = split_url_credentials(url)
    if user is None and password is None:
        return url
    parts = urlsplit(clean)
    userinfo = f"{user}:{MASK}" if password is not None else f"{user}"
    return urlunsplit((parts.scheme, f"{userinfo}@{parts.netloc}", parts.path, parts.query, parts.fragment))


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """`text` with every occurrence of each (non-trivial) secret value replaced by the mask."""
    for secret in sorted({s for s in secrets if s and len(s) >= 3}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text
