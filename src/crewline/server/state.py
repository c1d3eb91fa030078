"""What every route reaches through ``request.app.state.crewline``: the App, the config, the key checker."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from urllib.parse import quote

from fastapi import Request

from ..app import App
from .auth import Authenticator
from .config import ServerConfig

__all__ = ["ServerState", "state_of", "status_url"]


@dataclass
class ServerState:
    app: App
    config: ServerConfig
    auth: Authenticator
    worker: asyncio.Task[None] | None = None  # the in-process worker, when this server runs one
    metrics_token: str | None = None  # what GET /metrics asks for ([observe] metrics_token_env)
    # Daily key budgets whose limit this process has written to the ledger (``<key id>@<day>``).
    budget_scopes: set[str] = field(default_factory=set)


def state_of(request: Request) -> ServerState:
    state: ServerState = request.app.state.crewline
    return state


def status_url(request: Request, run_id: str) -> str:
    """Where a caller can follow the run (``[server] public_url`` when set, else this request's base)."""
    base = state_of(request).config.public_url or str(request.base_url).rstrip("/")
    return f"{base}/api/v1/runs/{quote(run_id, safe='')}"
