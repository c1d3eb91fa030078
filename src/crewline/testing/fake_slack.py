"""A fake Slack: a loopback HTTP server speaking Slack's Web API wire format, and a sender of interaction
callbacks signed as Slack signs them.

    with FakeSlack(token="xoxb-test", channels={"#ops": "C0OPS"}) as slack:
        slack.rate_limit(times=1, retry_after=1)  # the next call answers 429 + Retry-After
        ...                                     # point base_url at slack.url + "/api"
        posted = slack.messages[0]              # what was posted, as Slack stored it
        slack.click(hook_url, secret, posted, "approve", user=SlackUser("U1", "ana"))

Methods (``POST /api/<method>``, form or JSON bodies, ``Authorization: Bearer <token>``):
``chat.postMessage``, ``chat.update``, ``conversations.history`` and ``auth.test``. Answers are Slack's:
HTTP 200 with ``{"ok": true, ...}`` or ``{"ok": false, "error": "invalid_auth" | "not_authed" |
"channel_not_found" | "message_not_found"}``, and HTTP 429 with ``Retry-After`` and ``{"ok": false,
"error": "ratelimited"}``. A message posted with ``metadata`` keeps it, and ``conversations.history``
returns it with ``include_all_metadata``, as Slack does.

Interaction callbacks are ``block_actions`` payloads, form-encoded as ``payload=<JSON>``, signed with the
app's signing secret: ``X-Slack-Signature: v0=<hex HMAC-SHA256 of "v0:<timestamp>:<body>">`` and
``X-Slack-Request-Timestamp``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

__all__ = ["FakeSlack", "SlackCall", "SlackUser", "deliver", "sign_slack"]

_BOT_USER = "U0CREWBOT"
_BOT_ID = "B0CREWBOT"
_TEAM = "T0CREW"


@dataclass(frozen=True)
class SlackUser:
    """Who clicks a button: a Slack user id and name."""

    id: str = "U0REVIEWER"
    name: str = "reviewer"


@dataclass(frozen=True)
class SlackCall:
    """One Web API call as the fake received it: method, arguments (form or JSON) and headers."""

    method: str
    args: dict[str, Any]
    headers: dict[str, str]
    answered: int  # the HTTP status the fake answered with


def sign_slack(secret: str, body: bytes, *, timestamp: int | None = None) -> dict[str, str]:
    """Slack's request-signing headers for ``body`` (v0): what Slack sends with every callback."""
    ts = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"v0:{ts}:".encode() + body, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": str(ts), "X-Slack-Signature": f"v0={digest}"}


@dataclass
class _RateLimit:
    times: int
    retry_after: int
    method: str | None


@dataclass
class _Channel:
    id: str
    name: str
    messages: list[dict[str, Any]] = field(default_factory=list)


class FakeSlack:
    """A Slack workspace on loopback with one bot token and a few channels (name -> id)."""

    def __init__(self, *, token: str = "xoxb-fake-token", channels: dict[str, str] | None = None) -> None:
        self.token = token
        self._channels = {
            cid: _Channel(cid, name.lstrip("#"))
            for name, cid in (channels or {"#general": "C0GENERAL"}).items()
        }
        self.calls: list[SlackCall] = []
        self.responses: list[dict[str, Any]] = []  # what apps sent to a callback's response_url
        self._limits: list[_RateLimit] = []
        self._lock = threading.Lock()
        self._clock = 0
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self.url = ""

    # -- what a test scripts and inspects ---------------------------------------------------------------

    def rate_limit(self, *, times: int = 1, retry_after: int = 1, method: str | None = None) -> None:
        """The next ``times`` calls (of ``method``, or any) answer 429 ``ratelimited`` with Retry-After."""
        with self._lock:
            self._limits.append(_RateLimit(times, retry_after, method))

    @property
    def messages(self) -> list[dict[str, Any]]:
        """Every message in every channel, oldest first, as Slack stores it (with ``channel``)."""
        with self._lock:
            found = [dict(m, channel=c.id) for c in self._channels.values() for m in c.messages]
        return sorted(found, key=lambda m: float(m["ts"]))

    def calls_to(self, method: str) -> list[SlackCall]:
        return [c for c in self.calls if c.method == method]

    def interaction(self, message: dict[str, Any], action_id: str, *, user: SlackUser = SlackUser()) -> bytes:
        """The form body of a ``block_actions`` callback for a click on button ``action_id`` of ``message``."""
        button = _find_button(message, action_id)
        payload = {
            "type": "block_actions",
            "user": {"id": user.id, "username": user.name, "name": user.name, "team_id": _TEAM},
            "api_app_id": "A0CREWLINE",
            "team": {"id": _TEAM, "domain": "crewline-test"},
            "container": {
                "type": "message",
                "message_ts": message["ts"],
                "channel_id": message["channel"],
                "is_ephemeral": False,
            },
            "channel": {"id": message["channel"], "name": self._channels[message["channel"]].name},
            "message": {k: v for k, v in message.items() if k != "channel"},
            "trigger_id": f"{int(time.time())}.1.fake",
            "response_url": f"{self.url}/actions/{message['ts']}",
            "actions": [
                {
                    "type": "button",
                    "action_id": action_id,
                    "block_id": button.get("block_id", ""),
                    "value": button.get("value", ""),
                    "text": button.get("text", {}),
                    "action_ts": f"{time.time():.6f}",
                }
            ],
        }
        return urlencode({"payload": json.dumps(payload)}).encode()

    def click(
        self,
        url: str,
        secret: str,
        message: dict[str, Any],
        action_id: str,
        *,
        user: SlackUser = SlackUser(),
        timestamp: int | None = None,
    ) -> httpx.Response:
        """Send the signed callback of a click on ``action_id`` to ``url``, as Slack would."""
        body = self.interaction(message, action_id, user=user)
        return deliver(url, body, sign_slack(secret, body, timestamp=timestamp))

    # -- lifecycle ---------------------------------------------------------------------------------------

    def start(self) -> FakeSlack:
        app = Starlette(
            routes=[
                Route("/api/{method}", self._endpoint, methods=["POST", "GET"]),
                Route("/actions/{ts}", self._response_url, methods=["POST"]),
            ]
        )
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        config = uvicorn.Config(app, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the fake Slack did not start")
            time.sleep(0.01)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=30)
        if self._sock is not None:
            self._sock.close()

    def __enter__(self) -> FakeSlack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _response_url(self, request: Request) -> JSONResponse:
        """A callback's ``response_url``: an app answers the click there (e.g. an ephemeral note)."""
        answer = json.loads(await request.body() or b"{}")
        with self._lock:
            self.responses.append({"ts": request.path_params["ts"], **answer})
        return JSONResponse({"ok": True})

    # -- the Web API -------------------------------------------------------------------------------------

    async def _endpoint(self, request: Request) -> JSONResponse:
        method = request.path_params["method"]
        args = await _arguments(request)
        headers = {k.lower(): v for k, v in request.headers.items()}
        status, answer, extra = self._answer(method, args, headers.get("authorization", ""))
        with self._lock:
            self.calls.append(SlackCall(method, args, headers, status))
        return JSONResponse(answer, status_code=status, headers=extra)

    def _answer(
        self, method: str, args: dict[str, Any], authorization: str
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        limited = self._take_limit(method)
        if limited is not None:
            return 429, {"ok": False, "error": "ratelimited"}, {"Retry-After": str(limited)}
        if not authorization.startswith("Bearer "):
            return 200, {"ok": False, "error": "not_authed"}, {}
        if not hmac.compare_digest(authorization.removeprefix("Bearer ").encode(), self.token.encode()):
            return 200, {"ok": False, "error": "invalid_auth"}, {}
        handler = _METHODS.get(method)
        if handler is None:
            return 404, {"ok": False, "error": "unknown_method"}, {}
        with self._lock:
            return 200, handler(self, args), {}

    def _take_limit(self, method: str) -> int | None:
        with self._lock:
            for limit in self._limits:
                if limit.times > 0 and limit.method in (None, method):
                    limit.times -= 1
                    return limit.retry_after
        return None

    def _channel(self, ref: Any) -> _Channel | None:
        ref = str(ref or "")
        if ref in self._channels:
            return self._channels[ref]
        return next((c for c in self._channels.values() if c.name == ref.lstrip("#")), None)

    def _next_ts(self) -> str:
        self._clock += 1
        return f"{int(time.time())}.{self._clock:06d}"

    def _post_message(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(args.get("channel"))
        if channel is None:
            return {"ok": False, "error": "channel_not_found"}
        if not args.get("text") and not args.get("blocks"):
            return {"ok": False, "error": "no_text"}
        message = {
            "type": "message",
            "user": _BOT_USER,
            "bot_id": _BOT_ID,
            "text": str(args.get("text", "")),
            "ts": self._next_ts(),
            **({"blocks": _blocks(args["blocks"])} if args.get("blocks") else {}),
            **({"metadata": _json_arg(args["metadata"])} if args.get("metadata") else {}),
        }
        channel.messages.append(message)
        return {"ok": True, "channel": channel.id, "ts": message["ts"], "message": _public(message)}

    def _update(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(args.get("channel"))
        if channel is None:
            return {"ok": False, "error": "channel_not_found"}
        message = next((m for m in channel.messages if m["ts"] == args.get("ts")), None)
        if message is None:
            return {"ok": False, "error": "message_not_found"}
        message["text"] = str(args.get("text", message["text"]))
        if "blocks" in args:
            message["blocks"] = _blocks(args["blocks"])
        message["edited"] = {"user": _BOT_USER, "ts": self._next_ts()}
        return {"ok": True, "channel": channel.id, "ts": message["ts"], "text": message["text"]}

    def _history(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(args.get("channel"))
        if channel is None:
            return {"ok": False, "error": "channel_not_found"}
        oldest = float(args.get("oldest") or 0)
        with_metadata = str(args.get("include_all_metadata", "")).lower() in ("true", "1")
        found = [
            _public(m) if with_metadata else _public({k: v for k, v in m.items() if k != "metadata"})
            for m in reversed(channel.messages)
            if float(m["ts"]) >= oldest
        ]
        limit = int(args.get("limit") or 100)
        return {"ok": True, "messages": found[:limit], "has_more": len(found) > limit}

    def _auth_test(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "url": "https://crewline-test.slack.com/", "team_id": _TEAM, "user_id": _BOT_USER}


_METHODS = {
    "chat.postMessage": FakeSlack._post_message,
    "chat.update": FakeSlack._update,
    "conversations.history": FakeSlack._history,
    "auth.test": FakeSlack._auth_test,
}


async def _arguments(request: Request) -> dict[str, Any]:
    """A Web API call's arguments: JSON bodies (with a Bearer header), form bodies, or the query string."""
    body = await request.body()
    args: dict[str, Any] = dict(request.query_params)
    if request.headers.get("content-type", "").startswith("application/json") and body:
        parsed = json.loads(body)
        args.update(parsed if isinstance(parsed, dict) else {})
    elif body:
        args.update(parse_qsl(body.decode(), keep_blank_values=True))
    return args


def _json_arg(value: Any) -> Any:
    """Form bodies carry blocks and metadata as JSON strings; JSON bodies as values."""
    return json.loads(value) if isinstance(value, str) else value


def _blocks(value: Any) -> list[dict[str, Any]]:
    blocks = _json_arg(value)
    return [dict(b) for b in blocks] if isinstance(blocks, list) else []


def _public(message: dict[str, Any]) -> dict[str, Any]:
    copy: dict[str, Any] = json.loads(json.dumps(message))  # the caller cannot change the channel through it
    return copy


def _find_button(message: dict[str, Any], action_id: str) -> dict[str, Any]:
    for block in message.get("blocks", []):
        for element in block.get("elements", []):
            if element.get("type") == "button" and element.get("action_id") == action_id:
                return {**element, "block_id": block.get("block_id", "")}
    raise ValueError(f"the message has no button with action_id {action_id!r}")


def deliver(url: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    """POST a callback body as Slack does (form-encoded, with its signing headers)."""
    content_type = {"Content-Type": "application/x-www-form-urlencoded"}
    return httpx.post(url, content=body, headers={**content_type, **headers}, timeout=30)
