"""Who is calling: API keys from ``Authorization: Bearer`` or ``X-API-Key``, checked for scope and rate.

Verified keys are cached for ``[server] key_cache`` seconds, so a busy server does not read the key table
on every request; a key revoked through this server stops working at once, one revoked elsewhere (the
CLI, another server) within that window. Expiry is checked on every request. Requests-per-minute limits
are counted per server process.

Guessing keys is throttled per client address: after :data:`FREE_FAILURES` failed authentications within
:data:`FAILURE_WINDOW` seconds, the address waits (429 with ``Retry-After``) for a time that doubles with
each further failure, up to :data:`MAX_BACKOFF`; only keys already verified in the cache pass meanwhile.
A token that does not have the shape of a key fails before any database read.
"""

from __future__ import annotations

import collections
import hashlib
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi import Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from ..app import App
from ..errors import RunNotFound
from ..flows.run_records import RunRecord
from .errors import ApiError
from .keys import ACTIONS, PERMISSIONS, ApiKey, find_key, looks_like_key, touch_key

__all__ = ["FREE_FAILURES", "Authenticator", "check_reach", "client_address", "require"]

_bearer = HTTPBearer(auto_error=False, description="An API key from `crewline keys create`.")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="The same key, as a header.")
_CACHE_LIMIT = 10_000
FREE_FAILURES = 10
FAILURE_WINDOW = 300.0
MAX_BACKOFF = 300.0


@dataclass
class _Cached:
    key: ApiKey
    loaded: float


@dataclass
class _Failures:
    count: int
    last: float
    blocked_until: float = 0.0


class Authenticator:
    def __init__(self, app: App, cache_seconds: float = 5.0) -> None:
        self.app = app
        self.cache_seconds = cache_seconds
        self._cache: dict[str, _Cached] = {}
        self._calls: dict[str, collections.deque[float]] = {}
        self._failures: dict[str, _Failures] = {}

    async def check(self, token: str | None, action: str, address: str | None = None) -> ApiKey:
        """The caller's key, which must be active, may do ``action`` (a name in :data:`ACTIONS`), in rate.

        ``address`` is the client's, for the backoff after repeated failures (None: not throttled).
        """
        key = await self.authenticate(token, address)
        if not key.allows(action):
            allowed = sorted(s for s, perms in PERMISSIONS.items() if ACTIONS[action] in perms)
            raise ApiError(
                403,
                "forbidden",
                f"API key {key.id} has scope {key.scope!r}, which may not {action}; "
                f"it needs one of: {', '.join(allowed)}",
            )
        self._limit(key)
        return key

    async def authenticate(self, token: str | None, address: str | None = None) -> ApiKey:
        if not token:
            raise ApiError(
                401,
                "unauthenticated",
                "no API key: send `Authorization: Bearer <key>` (create one with `crewline keys create`)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        token = token.strip()
        self._check_backoff(token, address)
        key = await self._lookup(token) if looks_like_key(token) else None
        if key is None:
            self._failed(address)
            raise ApiError(
                401, "invalid_key", "the API key is not valid", headers={"WWW-Authenticate": "Bearer"}
            )
        status = key.status()
        if status != "active":
            raise ApiError(
                401, f"key_{status}", f"API key {key.id} is {status}", headers={"WWW-Authenticate": "Bearer"}
            )
        return key

    def forget(self, key_id: str) -> None:
        """Drop a key from the cache (after revoking it here)."""
        for digest, cached in list(self._cache.items()):
            if cached.key.id == key_id:
                del self._cache[digest]

    def _check_backoff(self, token: str, address: str | None) -> None:
        failures = None if address is None else self._failures.get(address)
        now = time.monotonic()
        if failures is None or failures.blocked_until <= now or self._cached(token, now) is not None:
            return
        wait = max(1, math.ceil(failures.blocked_until - now))
        raise ApiError(
            429,
            "rate_limited",
            f"too many failed authentications from this address; retry in {wait}s with a valid key",
            headers={"Retry-After": str(wait)},
        )

    def _failed(self, address: str | None) -> None:
        if address is None:
            return
        now = time.monotonic()
        failures = self._failures.get(address)
        if failures is None or now - failures.last > FAILURE_WINDOW:
            if len(self._failures) >= _CACHE_LIMIT:
                self._forget_failures(now)
            failures = self._failures[address] = _Failures(0, now)
        failures.count += 1
        failures.last = now
        if failures.count >= FREE_FAILURES:
            backoff = min(MAX_BACKOFF, 2.0 ** (failures.count - FREE_FAILURES))
            failures.blocked_until = now + backoff

    def _forget_failures(self, now: float) -> None:
        """Drop addresses whose failures are old; if that frees nothing, the oldest half (a flood of
        addresses must not grow memory without bound)."""
        for address, failures in list(self._failures.items()):
            if now - failures.last > FAILURE_WINDOW and failures.blocked_until <= now:
                del self._failures[address]
        if len(self._failures) >= _CACHE_LIMIT:
            for address in list(self._failures)[: _CACHE_LIMIT // 2]:
                del self._failures[address]

    def _cached(self, token: str, now: float) -> ApiKey | None:
        cached = self._cache.get(hashlib.sha256(token.encode()).hexdigest())
        if cached is not None and now - cached.loaded < self.cache_seconds:
            return cached.key
        return None

    async def _lookup(self, token: str) -> ApiKey | None:
        digest = hashlib.sha256(token.encode()).hexdigest()
        now = time.monotonic()
        cached = self._cached(token, now)
        if cached is not None:
            return cached
        key = await self.app.db.read(lambda conn: find_key(conn, token))
        if key is None:
            self._cache.pop(digest, None)
            return None
        when = time.time()
        if key.status() == "active" and (key.last_used_at is None or when - key.last_used_at > 60.0):
            await self.app.db.write(lambda conn: touch_key(conn, key.id, when))
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[digest] = _Cached(key, now)
        return key

    def _limit(self, key: ApiKey) -> None:
        if key.rpm is None:
            return
        now = time.monotonic()
        calls = self._calls.setdefault(key.id, collections.deque())
        while calls and calls[0] <= now - 60.0:
            calls.popleft()
        if len(calls) >= key.rpm:
            wait = max(1, math.ceil(calls[0] + 60.0 - now))
            raise ApiError(
                429,
                "rate_limited",
                f"API key {key.id} is limited to {key.rpm} requests per minute; retry in {wait}s",
                headers={"Retry-After": str(wait)},
            )
        calls.append(now)


def require(action: str) -> Callable[..., Awaitable[ApiKey]]:
    """A route dependency: the caller's key, which must be active, may do ``action`` and be in rate."""
    if action not in ACTIONS:  # at import time, so a misspelt action never reaches a request
        raise KeyError(f"no action {action!r} in crewline.server.keys.ACTIONS")

    async def dependency(
        request: Request,
        bearer: HTTPAuthorizationCredentials | None = Security(_bearer),
        header: str | None = Security(_header),
    ) -> ApiKey:
        token = bearer.credentials if bearer is not None else header
        auth: Authenticator = request.app.state.crewline.auth
        return await auth.check(token, action, client_address(request))

    return dependency


def client_address(request: Request) -> str | None:
    """The address failed authentications are counted against (the peer; behind a proxy, uvicorn's
    ``--forwarded-allow-ips`` makes it the forwarded client)."""
    return request.client.host if request.client is not None else None


def check_reach(key: ApiKey, action: str, run: RunRecord) -> None:
    """Refuse ``action`` on a run this key did not start when it may act only on its own runs.

    The answer is the one for a missing run, so a key cannot learn which runs others started.
    """
    owner = key.own_runs_only(action)
    if owner is not None and run.started_by != owner:
        raise RunNotFound(f"no run with id {run.id!r} started by API key {key.id}")
