"""API keys: created once, stored as a hash, looked up by a public prefix, revocable, expiring.

A key reads ``crl_<id>_<secret>``: ``id`` (12 hex characters) is public and names the key in listings and
logs; ``secret`` is 256 random bits. The database keeps only the SHA-256 of the whole token, which is
enough for a high-entropy token (no slow hash needed) and useless to anyone who reads the table. Each
key has one scope; :data:`PERMISSIONS` says what each scope may do, and :data:`ACTIONS` which permission
each action needs, whichever route reaches it. This module alone issues SQL on
``api_keys``.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any, Literal

from ..config import parse_duration
from ..errors import ConfigError, InvalidInput
from ..store.database import Conn

__all__ = [
    "ACTIONS",
    "PERMISSIONS",
    "SCOPES",
    "SIGNED_BY",
    "ApiKey",
    "create_key",
    "find_key",
    "list_keys",
    "parse_budget",
    "parse_lifetime",
    "revoke_key",
]

Scope = Literal["admin", "operator", "reviewer", "trigger", "proxy"]
SCOPES: tuple[Scope, ...] = ("admin", "operator", "reviewer", "trigger", "proxy")

Reach = Literal["all", "own"]
_OPERATOR: dict[str, Reach] = dict.fromkeys(
    (
        "runs:read",
        "runs:start",
        "runs:events",
        "runs:write",
        "spend:read",
        "workflows:read",
        "workflows:write",
        "flags:read",
        "flags:write",
        "reviews:read",
        "reviews:decide",
        "prompts:read",
        "prompts:write",
        "memory:read",
        "memory:write",
        "alerts:read",
        "triggers:read",
        "evals:read",
        "key:self",
    ),
    "all",
)

# What each scope may do, and on which runs: "own" is only the runs the key itself started. admin may do
# everything; a reviewer sees runs only through their reviews; a trigger sees and steers only its runs.
PERMISSIONS: dict[str, dict[str, Reach]] = {
    "admin": {**_OPERATOR, "keys": "all", "proxy": "all"},
    "operator": _OPERATOR,
    "reviewer": {"reviews:read": "all", "reviews:decide": "all", "key:self": "all"},
    "trigger": {
        "runs:start": "all",
        "runs:read": "own",
        "runs:events": "own",
        "workflows:read": "all",
        "key:self": "all",
    },
    "proxy": {"proxy": "all", "key:self": "all"},
}

# The one authorisation rule per action: every route that reaches an action asks for it by name, so two
# routes to the same action (settling an unknown outcome from the run or from its review) cannot differ.
ACTIONS: dict[str, str] = {
    "list workflows": "workflows:read",
    "read runs": "runs:read",
    "start runs": "runs:start",
    "send events": "runs:events",
    "cancel runs": "runs:write",
    "pause runs": "runs:write",
    "switch workflows and queues": "workflows:write",
    "read flags": "flags:read",
    "set flags": "flags:write",
    "fork runs": "runs:write",
    "rerun runs": "runs:write",
    "settle unknown outcomes": "runs:write",
    "undo runs": "runs:write",
    "settle failed runs": "runs:write",
    "read spend": "spend:read",
    # A trigger's health carries its last error (server names, mailbox names): for operators, not for the
    # outside systems trigger keys are given to.
    "read triggers": "triggers:read",
    "read evaluations": "evals:read",
    "label prompts": "prompts:write",
    "read reviews": "reviews:read",
    "decide reviews": "reviews:decide",
    "search memory": "memory:read",
    "read prompts": "prompts:read",
    "move prompt labels": "prompts:write",
    "read memory": "memory:read",
    "roll back memory": "memory:write",
    "read alerts": "alerts:read",
    "show its own key": "key:self",
    "manage keys": "keys",
    "proxy": "proxy",
    # Authenticated by the request's signature, not by a key: no scope holds a "signature:" permission,
    # so no API key reaches these; the route checks the signature instead (see SIGNED_BY).
    "decide reviews from Slack": "signature:slack",
}

SIGNED_BY = "signature:"
"""The prefix of permissions granted by a verified request signature instead of an API key."""

_TOKEN = re.compile(r"^crl_([0-9a-f]{12})_([A-Za-z0-9_-]{20,100})$")
_COLUMNS = "id, name, scope, budget_per_day, rpm, created_at, expires_at, revoked_at, last_used_at"


@dataclass(frozen=True)
class ApiKey:
    id: str
    name: str
    scope: str
    budget_per_day: float | None
    rpm: int | None
    created_at: float
    expires_at: float | None
    revoked_at: float | None
    last_used_at: float | None

    @property
    def who(self) -> str:
        """How a decision made with this key is recorded: its name and id."""
        return f"{self.name} (key {self.id})" if self.name else f"key {self.id}"

    def allows(self, action: str) -> bool:
        return self.reach(action) is not None

    def reach(self, action: str) -> Reach | None:
        """On which runs this key may do ``action``: all, only its own, or none (None)."""
        return PERMISSIONS.get(self.scope, {}).get(ACTIONS[action])

    def own_runs_only(self, action: str) -> str | None:
        """This key's id when it may do ``action`` only on runs it started (the runs' ``started_by``)."""
        return self.id if self.reach(action) == "own" else None

    def status(self, now: float | None = None) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= (time.time() if now is None else now):
            return "expired"
        return "active"

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "status": self.status()}


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def parse_budget(text: str) -> float:
    """Dollars per day from ``"$5/day"``, ``"5/day"``, ``"$5"`` or ``"5"``."""
    raw = text.strip().lower().removesuffix("/day").removesuffix("/d").strip().removeprefix("$")
    try:
        value = float(raw)
    except ValueError:
        raise InvalidInput(f"cannot read budget {text!r}: write dollars per day, e.g. '$5/day'") from None
    if not value >= 0 or value == float("inf"):
        raise InvalidInput(f"budget must be a non-negative number of dollars, got {text!r}")
    return value


MAX_LIFETIME = 10 * 365 * 86400.0
MIN_LIFETIME = 60.0
"""Shorter lifetimes would create keys that expire before anyone could use them."""


def parse_lifetime(text: str, what: str) -> float:
    """Seconds a new key lives, from ``"30d"``, ``"12h"``...; ``what`` names the option in errors.

    A lifetime must end (not ``inf`` or ``nan``), within ten years, and not before the key can be used
    (``0s``, ``1ms``: at least a minute).
    """
    hint = "give a duration from 1m to 3650d, e.g. 30d or 12h"
    try:
        seconds = parse_duration(text)
    except ConfigError as e:
        raise InvalidInput(f"{what}: {e}; {hint}") from e
    if not math.isfinite(seconds) or not MIN_LIFETIME <= seconds <= MAX_LIFETIME:
        raise InvalidInput(f"{what}: {text!r} is not a lifetime a key can have; {hint}")
    return seconds


def create_key(
    conn: Conn,
    *,
    scope: str,
    name: str = "",
    budget_per_day: float | None = None,
    rpm: int | None = None,
    expires_at: float | None = None,
) -> tuple[ApiKey, str]:
    """Store a new key and return it with its token, which is never available again."""
    if scope not in SCOPES:
        raise InvalidInput(f"unknown scope {scope!r}: use one of {', '.join(SCOPES)}")
    if rpm is not None and rpm < 1:
        raise InvalidInput(f"rpm must be at least 1, got {rpm}")
    key_id = secrets.token_hex(6)
    token = f"crl_{key_id}_{secrets.token_urlsafe(32)}"
    now = time.time()
    conn.execute(
        "INSERT INTO api_keys (id, name, scope, secret_hash, budget_per_day, rpm, created_at, expires_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (key_id, name, scope, _hash(token), budget_per_day, rpm, now, expires_at),
    )
    return ApiKey(key_id, name, scope, budget_per_day, rpm, now, expires_at, None, None), token


def looks_like_key(token: str) -> bool:
    """Whether ``token`` has the shape of a key, so a malformed one costs no database read."""
    return _TOKEN.match(token) is not None


def find_key(conn: Conn, token: str) -> ApiKey | None:
    """The key this token belongs to (active or not), or None if the token matches no key."""
    match = _TOKEN.match(token)
    if match is None:
        return None
    row = conn.one(f"SELECT {_COLUMNS}, secret_hash FROM api_keys WHERE id = ?", (match.group(1),))
    if row is None or not hmac.compare_digest(str(row[-1]), _hash(token)):
        return None
    return ApiKey(*row[:-1])


def touch_key(conn: Conn, key_id: str, when: float) -> None:
    conn.execute("UPDATE api_keys SET last_used_at = ? WHERE id = ?", (when, key_id))


def list_keys(conn: Conn, *, include_revoked: bool = True) -> list[ApiKey]:
    where = "" if include_revoked else " WHERE revoked_at IS NULL"
    return [ApiKey(*r) for r in conn.all(f"SELECT {_COLUMNS} FROM api_keys{where} ORDER BY created_at, id")]


def get_key(conn: Conn, key_id: str) -> ApiKey | None:
    row = conn.one(f"SELECT {_COLUMNS} FROM api_keys WHERE id = ?", (key_id,))
    return None if row is None else ApiKey(*row)


def revoke_key(conn: Conn, key_id: str) -> ApiKey:
    """Revoke a key by id (revoking twice is harmless); raises :class:`InvalidInput` for an unknown id."""
    key_id = key_id.strip()
    match = _TOKEN.match(key_id)
    if match is not None:  # someone pasted the whole token: use its id, never echo it back
        key_id = match.group(1)
    if get_key(conn, key_id) is None:
        if re.fullmatch(r"[0-9a-f]{1,12}", key_id):
            raise InvalidInput(f"no API key with id {key_id}: see `crewline keys list`")
        # Not echoed: what was typed may be some other secret pasted by mistake.
        raise InvalidInput(
            "no API key has that id: a key id is 12 hex digits, the id column of `crewline keys list`"
        )
    conn.execute(
        "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (time.time(), key_id)
    )
    found = get_key(conn, key_id)
    assert found is not None
    return found
