"""Scopes name whose memory a thing is: ``global``, ``customer:42``, ``user:ana``, ``workflow:triage``,
``kb`` or any ``kind:id``. A scope is an opaque, case-sensitive string; its kind (the part before the
first colon) only groups scopes for statistics and listing."""

from __future__ import annotations

import re
from collections.abc import Iterable

from ..errors import InvalidInput

__all__ = ["GLOBAL", "scope_kind", "validate_scope", "validate_scopes"]

GLOBAL = "global"
_MAX_LEN = 200
_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*(:[^\s:][^\s]*)?")


def validate_scope(scope: object, *, field: str = "scope") -> str:
    """``scope`` itself when well formed, else :class:`InvalidInput` naming ``field``."""
    if not isinstance(scope, str):
        raise InvalidInput(
            f"{field} must be a string like 'customer:42' or 'global', got {type(scope).__name__}"
        )
    if not scope or len(scope) > _MAX_LEN or not _PATTERN.fullmatch(scope):
        raise InvalidInput(
            f"{field} {scope!r} is not a valid scope: use 'global', a name like 'kb', or 'kind:id' "
            f"(letters, digits, '_', '-', '.' before the colon, no spaces; at most {_MAX_LEN} characters)"
        )
    return scope


def validate_scopes(scopes: str | Iterable[str], *, field: str = "scope") -> list[str]:
    """One scope or several, validated and de-duplicated in order."""
    if isinstance(scopes, str):
        return [validate_scope(scopes, field=field)]
    try:
        items = list(scopes)
    except TypeError:
        raise InvalidInput(
            f"{field} must be a scope or a list of scopes, got {type(scopes).__name__}"
        ) from None
    if not items:
        raise InvalidInput(f"{field} must name at least one scope")
    out: list[str] = []
    for i, s in enumerate(items):
        validate_scope(s, field=f"{field}[{i}]")
        if s not in out:
            out.append(s)
    return out


def scope_kind(scope: str) -> str:
    return scope.split(":", 1)[0]
