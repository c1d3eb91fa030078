"""Completion callbacks: when a webhook's run finishes, POST its outcome to the hook's ``callback_url``.

The body is JSON ``{"hook", "run_id", "status", "output", "error", "finished_at"}``, signed like an
incoming webhook with the hook's secret (``X-Crewline-Timestamp``, ``X-Crewline-Signature``). Any 2xx
answer settles it; otherwise it is retried with exponential backoff, eight attempts in all. Several
servers may run this loop on one database: each callback is leased to one of them at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping

import httpx

from ..app import App
from ..errors import DatabaseUnavailable
from ..signing import signed_headers
from ..store.payloads import dump
from .config import HookConfig
from .deliveries import Callback, claim_callbacks, settle_callback

__all__ = ["CallbackSender"]

log = logging.getLogger("crewline.server.callbacks")


class CallbackSender:
    def __init__(self, app: App, hooks: Mapping[str, HookConfig], *, interval: float = 0.5) -> None:
        self.app = app
        self.hooks = hooks
        self.interval = interval
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        if not any(h.callback_url for h in self.hooks.values()):
            return
        async with httpx.AsyncClient(timeout=10.0, follow_redirects=False) as client:
            while not self._stop.is_set():
                try:
                    await self.send_due(client)
                except DatabaseUnavailable as e:
                    log.warning("cannot read pending callbacks: %s", e)
                except Exception:
                    log.exception("callback loop error")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self.interval)

    async def send_due(self, client: httpx.AsyncClient) -> int:
        due = await self.app.db.write(claim_callbacks)
        if due:
            await asyncio.gather(*(self._send(client, cb) for cb in due))
        return len(due)

    async def _send(self, client: httpx.AsyncClient, callback: Callback) -> None:
        hook = self.hooks.get(callback.hook)
        error = None
        if hook is None:
            error = f"hook {callback.hook!r} is no longer configured"
        else:
            error = await self._post(client, hook, callback)
        state = await self.app.db.write(lambda conn: settle_callback(conn, callback, error))
        if error is not None:
            log.warning(
                "callback for run %s (hook %s): %s; now %s", callback.run_id, callback.hook, error, state
            )

    async def _post(self, client: httpx.AsyncClient, hook: HookConfig, callback: Callback) -> str | None:
        run = await self.app.get_run(callback.run_id)
        body = dump(
            {
                "hook": hook.name,
                "run_id": run.id,
                "status": run.status,
                "output": run.output,
                "error": run.error,
                "finished_at": run.finished_at,
            }
        )
        headers = {"Content-Type": "application/json", **signed_headers(hook.secret, body)}
        try:
            response = await client.post(callback.url, content=body, headers=headers)
        except httpx.HTTPError as e:
            return f"{type(e).__name__}: {e}"
        if response.is_success:
            return None
        return f"answered HTTP {response.status_code}"
