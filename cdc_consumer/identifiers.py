"""Validation of identifiers that reach CQL/SQL text (values are always bound, never formatted)."""

from __future__ import annotations

import re

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,47}")


class InvalidIdentifier(ValueError):
    pass


def validate_identifier(name: str, *, what: str = "identifier") -> str:
    """Return `name` if it is a plain identifier safe to put in CQL/SQL text, else raise naming it."""
    if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):
        raise InvalidIdentifier(f"invalid {what} {name!r:.60}: must match [A-Za-z_][A-Za-z0-9_]{{0,47}}")
    return name
