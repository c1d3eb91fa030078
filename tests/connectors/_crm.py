"""A loopback CRM for the HTTP connector's tests: bearer and OAuth2 (client credentials, rotating refresh
tokens), contacts, notes deduplicated by Idempotency-Key, rate limits with Retry-After, oversized answers
and a hanging endpoint. It runs under uvicorn in a thread, as tests/server does; each counter is what the
tests assert on."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

STATIC_TOKEN = "crm-static-token-77aa"
CLIENT_ID = "crewline-client"
CLIENT_SECRET = "crm-client-secret-91bb"
FIRST_REFRESH = "crm-refresh-0-cc"


@dataclass
class FakeCrm:
    expires_in: int | None = 3600
    valid: set[str] = field(default_factory=lambda: {STATIC_TOKEN})
    refresh_token: str = FIRST_REFRESH
    grants: list[str] = field(default_factory=list)
    unauthorized: int = 0
    contacts: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: dict[str, dict[str, Any]] = field(default_factory=dict)  # by Idempotency-Key
    note_requests: list[str | None] = field(default_factory=list)
    limited: int = 0  # answer this many requests to /limited with 429
    retry_after: str = "0"
    limited_seen: int = 0
    hang: int = 0  # hang on this many requests to /slow
    slow_seen: int = 0
    slow_notes: int = 0  # process this many note writes, but answer only after the client gave up
    url: str = ""

    def revoke_all(self) -> None:
        """Every OAuth token stops working at once (a revocation, or the clocks disagreeing)."""
        self.valid = {STATIC_TOKEN}

    def _authorized(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        ok = header.startswith("Bearer ") and header[7:] in self.valid
        self.unauthorized += not ok
        return ok

    async def token(self, request: Request) -> Response:
        form = await request.form()
        grant = str(form.get("grant_type"))
        if form.get("client_id") != CLIENT_ID:
            return JSONResponse({"error": "invalid_client"}, 401)
        if grant == "client_credentials" and form.get("client_secret") != CLIENT_SECRET:
            return JSONResponse({"error": "invalid_client"}, 401)
        if grant == "refresh_token":
            if form.get("refresh_token") != self.refresh_token:
                return JSONResponse({"error": "invalid_grant"}, 400)
            self.refresh_token = f"crm-refresh-{len(self.grants) + 1}-cc"  # rotates on every use
        self.grants.append(grant)
        token = f"access-{len(self.grants)}-{time.monotonic_ns()}"
        self.valid.add(token)
        body: dict[str, Any] = {"access_token": token, "token_type": "Bearer"}
        if self.expires_in is not None:
            body["expires_in"] = self.expires_in
        if grant == "refresh_token":
            body["refresh_token"] = self.refresh_token
        return JSONResponse(body)

    async def contact(self, request: Request) -> Response:
        if not self._authorized(request):
            return JSONResponse({"error": "invalid_token"}, 401)
        found = self.contacts.get(request.path_params["id"])
        return JSONResponse(found) if found else JSONResponse({"message": "no such contact"}, 404)

    async def note(self, request: Request) -> Response:
        if not self._authorized(request):
            return JSONResponse({"error": "invalid_token"}, 401)
        key = request.headers.get("idempotency-key")
        self.note_requests.append(key)
        body = await request.json()
        if key is None or key not in self.notes:
            self.notes[key or f"none-{len(self.notes)}"] = {"id": f"n-{len(self.notes) + 1}", **body}
        if self.slow_notes > 0:
            self.slow_notes -= 1
            await asyncio.sleep(3)  # done, but the client has given up waiting
        return JSONResponse(self.notes[key] if key else list(self.notes.values())[-1], 201)

    async def limited_route(self, request: Request) -> Response:
        self.limited_seen += 1
        if self.limited > 0:
            self.limited -= 1
            return JSONResponse({"error": "slow down"}, 429, headers={"Retry-After": self.retry_after})
        return JSONResponse({"ok": True})

    async def big(self, request: Request) -> Response:
        if request.query_params.get("chunked"):

            async def chunks() -> AsyncIterator[bytes]:
                yield b'{"data": "'
                for _ in range(64):
                    yield b"x" * 1024
                yield b'"}'

            return StreamingResponse(chunks(), media_type="application/json")
        return Response(b'{"data": "' + b"x" * 65536 + b'"}', media_type="application/json")

    async def slow(self, request: Request) -> Response:
        self.slow_seen += 1
        if self.hang > 0:
            self.hang -= 1
            await asyncio.sleep(3)
        return JSONResponse({"ok": True, "seen": self.slow_seen})

    def asgi(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/oauth/token", self.token, methods=["POST"]),
                Route("/contacts/{id}", self.contact),
                Route("/notes", self.note, methods=["POST"]),
                Route("/limited", self.limited_route),
                Route("/big", self.big),
                Route("/slow", self.slow),
            ]
        )


@contextmanager
def serving_crm(crm: FakeCrm) -> Iterator[FakeCrm]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(crm.asgi(), log_level="warning", timeout_graceful_shutdown=1, lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "fake CRM did not start"
        time.sleep(0.01)
    crm.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        yield crm
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
