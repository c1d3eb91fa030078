"""What both wire formats share: who is calling, reading the body, the key's budget, error classification."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from ...errors import (
    AuthError,
    BadRequest,
    BudgetExceeded,
    ConfigError,
    ContentPolicy,
    CrewlineError,
    DatabaseUnavailable,
    InvalidInput,
    ModelError,
    ModelTimeout,
    PriceUnknown,
    RateLimited,
    UnknownModel,
)
from ...models import Gateway
from ...models.calls import CallOptions
from ...store.payloads import parse_json
from ..auth import client_address
from ..errors import ApiError
from ..keys import ApiKey
from ..outage import unavailable_headers, unavailable_message
from ..state import state_of

__all__ = ["Failure", "ProxyCall", "authenticate", "classify", "guarded", "open_call"]

log = logging.getLogger("crewline.server.proxy")


@dataclass(frozen=True)
class Failure:
    """A proxy error before it is put in a protocol's shape."""

    status: int
    kind: str  # invalid_request | authentication | permission | not_found | too_large | rate_limit | quota | timeout | upstream | unavailable | internal
    message: str
    headers: dict[str, str]


@dataclass
class ProxyCall:
    key: ApiKey
    body: dict[str, Any]
    gateway: Gateway
    budget_scope: dict[str, str]

    @property
    def options(self) -> CallOptions:
        """How the gateway accounts for the call: against the key's budget."""
        return CallOptions(budget_scope=self.budget_scope)

    def check_model(self, name: str) -> None:
        """Refuse a model the configuration does not offer to callers from outside the app."""
        if not self.gateway.offers(name):
            raise UnknownModel(
                f"model {name!r} is not offered by this server: use one of "
                f"{', '.join(self.gateway.offered())} (GET /v1/models lists them)"
            )


def classify(e: BaseException) -> Failure:
    """The HTTP status and kind for an error raised while serving a proxy call."""
    if isinstance(e, ApiError):
        kinds = {
            401: "authentication",
            403: "permission",
            404: "not_found",
            413: "too_large",
            429: "rate_limit",
        }
        return Failure(e.status, kinds.get(e.status, "invalid_request"), e.message, e.headers)
    if isinstance(e, BudgetExceeded):
        # 429 like an exhausted quota upstream, but SDKs must not retry it: the budget will not refill.
        return Failure(429, "quota", str(e), {"x-should-retry": "false"})
    if isinstance(e, UnknownModel):
        return Failure(404, "not_found", str(e), {})
    if isinstance(e, InvalidInput | BadRequest | ContentPolicy | PriceUnknown):
        return Failure(400, "invalid_request", str(e), {})
    if isinstance(e, RateLimited):
        headers = {} if e.retry_after is None else {"retry-after": str(max(1, round(e.retry_after)))}
        return Failure(429, "rate_limit", str(e), headers)
    if isinstance(e, ModelTimeout):
        return Failure(504, "timeout", str(e), {})
    if isinstance(e, AuthError):
        return Failure(502, "upstream", f"the upstream provider refused crewline's credentials: {e}", {})
    if isinstance(e, ModelError):
        return Failure(502, "upstream", str(e), {})
    if isinstance(e, DatabaseUnavailable):
        return Failure(503, "unavailable", unavailable_message(), unavailable_headers())
    if isinstance(e, ConfigError):
        return Failure(500, "internal", f"the server's model configuration is wrong: {e}", {})
    if isinstance(e, CrewlineError):
        return Failure(503, "upstream", str(e), {})
    return Failure(500, "internal", "the proxy failed on this request; details are in the server log", {})


async def open_call(request: Request) -> ProxyCall:
    """Authenticate a proxy key, read the JSON body within the size limit, and find the key's budget."""
    state = state_of(request)
    key = await authenticate(request)
    raw = await _read(request, state.config.max_body)
    body = parse_json(raw, "request body") if raw else None
    if not isinstance(body, dict):
        raise InvalidInput("request body must be a JSON object")
    gateway = state.app.models
    return ProxyCall(key, body, gateway, await _budget_scope(request, gateway, key))


async def authenticate(request: Request) -> ApiKey:
    """The proxy key of ``request``, from any header an OpenAI or Anthropic client sends it in."""
    return await state_of(request).auth.check(_token(request), "proxy", client_address(request))


def _token(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return request.headers.get("x-api-key") or request.headers.get("api-key")


async def _read(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "payload_too_large", f"request body is larger than the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(
                413, "payload_too_large", f"request body is larger than the limit of {limit} bytes"
            )
        chunks.append(chunk)
    return b"".join(chunks)


async def _budget_scope(request: Request, gateway: Gateway, key: ApiKey) -> dict[str, str]:
    """Calls count against ``key:<id>``, and, for a key with a daily budget, ``key:<id>@<UTC day>``."""
    if key.budget_per_day is None or gateway.ledger is None:
        return {"key": key.id}
    day = f"{key.id}@{datetime.now(UTC):%Y-%m-%d}"
    limited = state_of(request).budget_scopes
    if day not in limited:
        await asyncio.to_thread(gateway.ledger.set_limit, f"key:{day}", key.budget_per_day)
        limited.add(day)
    return {"key": day}


def guarded(
    render: Callable[[Failure], JSONResponse],
) -> Callable[[Callable[..., Awaitable[Any]]], Callable[..., Awaitable[Any]]]:
    """Wrap a proxy endpoint so any error answers through ``render`` in the protocol's shape."""

    def wrap(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def endpoint(request: Request) -> Any:
            try:
                return await fn(request)
            except Exception as e:
                failure = classify(e)
                if failure.status >= 500 and failure.kind != "unavailable":  # logged once per outage
                    log.log(
                        logging.ERROR if failure.kind == "internal" else logging.WARNING,
                        "proxy %s: %s",
                        request.url.path,
                        failure.message,
                        exc_info=e if failure.kind == "internal" else None,
                    )
                return render(failure)

        endpoint.__name__ = fn.__name__
        return endpoint

    return wrap
