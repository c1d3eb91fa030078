"""Exact-match response cache in the store.

The key is a SHA-256 over the canonical request (the name asked for, messages, tools, sampling settings,
output schema), so any difference in what was asked is a miss. Only deterministic requests are cached
(temperature 0) unless the caller opts in; entries expire after the configured TTL. A hit costs nothing
and is recorded as a hit. This module alone issues SQL on ``model_cache``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable
from typing import Any

from ..store import Conn, Database
from .types import ImagePart, ModelRequest, ModelResponse, TextPart, ToolCall, Usage

__all__ = ["ResponseCache", "request_key"]


def _plain(value: Any) -> Any:
    if isinstance(value, TextPart | ImagePart | ToolCall):
        return {"_": type(value).__name__, **dataclasses.asdict(value)}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def request_key(request: ModelRequest) -> str:
    canonical = json.dumps(_plain(request), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _encode(resp: ModelResponse) -> str:
    return json.dumps(
        {
            "text": resp.text,
            "tool_calls": [[c.id, c.name, c.arguments] for c in resp.tool_calls],
            "finish_reason": resp.finish_reason,
            "usage": dataclasses.asdict(resp.usage),
            "model": resp.model,
            "provider": resp.provider,
            "deployment": resp.deployment,
            "response_id": resp.response_id,
        }
    )


def _decode(text: str) -> ModelResponse:
    d = json.loads(text)
    return ModelResponse(
        text=d["text"],
        tool_calls=tuple(ToolCall(i, n, a) for i, n, a in d["tool_calls"]),
        finish_reason=d["finish_reason"],
        usage=Usage(**d["usage"]),
        model=d["model"],
        provider=d["provider"],
        deployment=d["deployment"],
        response_id=d["response_id"],
        cached=True,
        attempts=0,
    )


class ResponseCache:
    def __init__(self, db: Database, ttl: float, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.ttl = ttl
        self._clock = clock

    async def get(self, key: str) -> ModelResponse | None:
        now = self._clock()
        row = await self.db.read(
            lambda conn: conn.one(
                "SELECT response FROM model_cache WHERE key = ? AND expires_at > ?", (key, now)
            )
        )
        return None if row is None else _decode(row[0])

    def put_in(self, conn: Conn, key: str, response: ModelResponse) -> None:
        now = self._clock()
        conn.execute(
            "INSERT INTO model_cache (key, response, created_at, expires_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (key) DO UPDATE SET response = excluded.response, created_at = excluded.created_at, "
            "expires_at = excluded.expires_at",
            (key, _encode(response), now, now + self.ttl),
        )

    def hit_in(self, conn: Conn, key: str) -> None:
        conn.execute("UPDATE model_cache SET hits = hits + 1 WHERE key = ?", (key,))

    def prune(self) -> int:
        """Drop expired entries; returns how many."""
        now = self._clock()
        return int(
            self.db.run(
                lambda conn: conn.execute("DELETE FROM model_cache WHERE expires_at <= ?", (now,)).rowcount
            )
        )
