"""The adapter base class, the format registry, and the HTTP plumbing every adapter shares.

Every adapter speaks through the gateway's pooled :class:`~crewline.models.http.HttpClient` and raises
only crewline errors: transport failures, HTTP statuses, non-JSON bodies and streams that stop before
their terminal event are all mapped here, at the boundary, to the :mod:`crewline.errors` model tree with
``retryable`` known.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from ...errors import (
    AuthError,
    BadRequest,
    ContentPolicy,
    ContextTooLong,
    ModelError,
    ModelTimeout,
    ProviderUnavailable,
    RateLimited,
    UnsupportedOperation,
)
from ..http import HttpClient, HttpError, HttpTimeout
from ..types import EmbeddingResponse, ModelRequest, ModelResponse, StreamChunk

__all__ = [
    "Adapter",
    "Endpoint",
    "drain",
    "error_for_status",
    "parse_retry_after",
    "register",
    "registered",
    "sampling",
]

A = TypeVar("A", bound="type[Adapter]")
_REGISTRY: dict[str, type[Adapter]] = {}

# Bodies larger than this are refused rather than parsed: a runaway reply must not exhaust memory.
MAX_BODY_BYTES = 32 * 1024 * 1024

_CONTEXT_RE = re.compile(
    r"context[_ ]length|context window|maximum context|too many tokens|prompt is too long|"
    r"input (is )?too long|exceeds the (maximum|max)|max_tokens.*exceed|token limit",
    re.IGNORECASE,
)
# Servers that cannot do an operation at all say so, some with a 500 (llama-cpp-python's server raises
# "Llama model must be created with embedding=True"): no retry or breaker should count that as an outage.
_UNSUPPORTED_RE = re.compile(
    r"embedding=True|does not support embeddings|(operation|method|endpoint) (is )?not (supported|implemented)",
    re.IGNORECASE,
)
_POLICY_RE = re.compile(r"content[_ ]?(policy|filter|management)|safety|moderation|flagged", re.IGNORECASE)


def register(fmt: str) -> Callable[[A], A]:
    """Class decorator: make an adapter class the one used for wire format ``fmt``."""

    def deco(cls: A) -> A:
        cls.format = fmt
        _REGISTRY[fmt] = cls
        return cls

    return deco


def registered() -> Mapping[str, type[Adapter]]:
    return _REGISTRY


@dataclass(frozen=True)
class Endpoint:
    """A provider as reached: name, wire format, base URL, the resolved key and extra headers."""

    name: str
    format: str
    base_url: str
    api_key: str | None = field(default=None, repr=False)  # never printed
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout: float = 60.0
    options: Mapping[str, Any] = field(default_factory=dict)


class Adapter:
    """Converts canonical requests to one wire format and back. Subclasses override the hooks."""

    format: ClassVar[str] = ""
    native_schema: ClassVar[bool] = True  # has a JSON-schema output mode; otherwise prompted JSON

    def __init__(self, endpoint: Endpoint, client: HttpClient) -> None:
        self.endpoint = endpoint
        self.client = client
        self.provider = endpoint.name

    async def complete(self, request: ModelRequest, model: str) -> ModelResponse:
        raise NotImplementedError

    def stream(self, request: ModelRequest, model: str) -> AsyncIterator[StreamChunk]:
        raise NotImplementedError

    async def embed(self, texts: Sequence[str], model: str) -> EmbeddingResponse:
        raise UnsupportedOperation(
            f"provider {self.provider!r} ({self.format} format) has no embeddings", provider=self.provider
        )

    @classmethod
    def embeds(cls, options: Mapping[str, Any]) -> bool:
        """Whether a provider of this format with these ``options`` can answer :meth:`embed`."""
        return cls.embed is not Adapter.embed

    @classmethod
    def served_context(cls, options: Mapping[str, Any]) -> int | None:
        """The context window a provider of this format serves with these ``options``, when the provider
        itself sets one (a local server started with a context size); ``None`` leaves it to the model."""
        return None

    async def aclose(self) -> None:
        """Release what the adapter owns beyond the shared client (e.g. a local server process)."""

    # -- HTTP plumbing shared by the formats -----------------------------------------------------------

    def url(self, path: str) -> str:
        return self.endpoint.base_url.rstrip("/") + path

    def auth_headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.endpoint.api_key}"} if self.endpoint.api_key else {}

    def headers(self) -> dict[str, str]:
        return {"content-type": "application/json", **self.auth_headers(), **self.endpoint.headers}

    def classify(self, status: int, body: Any, text: str) -> type[ModelError] | None:
        """A format-specific error class for an error body; ``None`` falls back to the generic mapping."""
        return None

    async def post_json(
        self, path: str, body: Mapping[str, Any], params: Mapping[str, str] | None = None
    ) -> Any:
        try:
            resp = await self.client.request(
                "POST",
                self.url(path),
                body=_dumps(body),
                headers=self.headers(),
                params=params,
                timeout=self.endpoint.timeout,
            )
        except HttpError as e:
            raise self.transport_error(e) from e
        if resp.status >= 400:
            raise self.error(resp.status, resp.content, resp.headers)
        return self.decode(resp.content)

    def transport_error(self, e: HttpError, *, midway: bool = False) -> ModelError:
        """A transport failure as a crewline error: a timeout, or the provider being unreachable."""
        timeout = self.endpoint.timeout
        if isinstance(e, HttpTimeout):
            what = f"stream stalled for {timeout:g}s" if midway else f"no reply within {timeout:g}s"
            return ModelTimeout(f"{self.provider}: {what}", provider=self.provider)
        what = f"stream cut off midway ({type(e).__name__}: {e})" if midway else f"{type(e).__name__}: {e}"
        return ProviderUnavailable(f"{self.provider}: {what}", provider=self.provider)

    def vectors(self, texts: Sequence[str], read: Callable[[], list[list[float]]]) -> list[list[float]]:
        """The embeddings ``read`` takes from a reply, one per text, or :class:`ProviderUnavailable`."""
        try:
            vectors = read()
        except (KeyError, TypeError, ValueError) as e:
            raise ProviderUnavailable(
                f"{self.provider}: malformed embeddings reply: {e}", provider=self.provider
            ) from e
        if len(vectors) != len(texts):
            raise ProviderUnavailable(
                f"{self.provider}: asked for {len(texts)} embeddings, got {len(vectors)}",
                provider=self.provider,
            )
        return vectors

    def decode(self, content: bytes) -> Any:
        limit = int(self.endpoint.options.get("max_body_bytes", MAX_BODY_BYTES))
        if len(content) > limit:
            raise ProviderUnavailable(
                f"{self.provider}: reply of {len(content)} bytes is over the {limit} byte limit",
                provider=self.provider,
            )
        try:
            return json.loads(content)
        except ValueError as e:
            raise ProviderUnavailable(
                f"{self.provider}: malformed JSON in the reply ({e}): {content[:120]!r}",
                provider=self.provider,
            ) from e

    def error(self, status: int, content: bytes, headers: Mapping[str, str]) -> ModelError:
        text = content[:4000].decode("utf-8", "replace")
        try:
            body = json.loads(text)
        except ValueError:
            body = None
        cls = self.classify(status, body, text)
        return error_for_status(self.provider, status, _message_of(body, text), headers, cls)

    async def stream_lines(
        self, path: str, body: Mapping[str, Any], params: Mapping[str, str] | None = None
    ) -> AsyncIterator[str]:
        """POST and yield the reply's lines; transport failures midway become ``ProviderUnavailable``."""
        started = False
        try:
            async with self.client.stream(
                "POST",
                self.url(path),
                body=_dumps(body),
                headers=self.headers(),
                params=params,
                timeout=self.endpoint.timeout,
            ) as resp:
                started = True
                if resp.status >= 400:
                    raise self.error(resp.status, await resp.read(), resp.headers)
                async for line in resp.iter_lines():
                    yield line
        except HttpError as e:
            raise self.transport_error(e, midway=started) from e

    async def sse(
        self, path: str, body: Mapping[str, Any], params: Mapping[str, str] | None = None
    ) -> AsyncIterator[tuple[str, str]]:
        """Server-sent events of a streamed reply as ``(event, data)``; ``event`` is "" when not named."""
        event, data = "", list[str]()
        async for line in self.stream_lines(path, body, params):
            if not line:
                if data:
                    yield event, "\n".join(data)
                event, data = "", []
            elif line.startswith("data:"):
                data.append(line[5:].lstrip(" "))
            elif line.startswith("event:"):
                event = line[6:].strip()
        if data:
            yield event, "\n".join(data)

    def cut_off(self, what: str) -> ProviderUnavailable:
        return ProviderUnavailable(f"{self.provider}: stream ended before {what}", provider=self.provider)


def sampling(
    request: ModelRequest, *, max_tokens: str | None, top_p: str = "top_p", stop: str | None
) -> dict[str, Any]:
    """The request's sampling settings that are set, under one wire format's field names (``None``: the
    format takes that setting elsewhere, or not at all)."""
    out: dict[str, Any] = {}
    if max_tokens is not None and request.max_tokens is not None:
        out[max_tokens] = request.max_tokens
    if request.temperature is not None:
        out["temperature"] = request.temperature
    if request.top_p is not None:
        out[top_p] = request.top_p
    if stop is not None and request.stop:
        out[stop] = list(request.stop)
    return out


async def drain(events: AsyncIterator[Any], within: float = 0.05) -> None:
    """Read the body's end after its terminal event (OpenAI's ``[DONE]``, Anthropic's
    ``message_stop``, Ollama's ``done`` line, a Responses ``response.completed``) (it normally arrives with it), so the connection goes back to
    the pool instead of being closed unread; a provider that does not end the body is cut off soon after."""
    try:
        async with asyncio.timeout(within):
            async for _ in events:
                pass
    except (TimeoutError, ModelError):
        pass
    finally:
        await events.aclose()  # type: ignore[attr-defined]


def _dumps(body: Mapping[str, Any]) -> bytes:
    # Compact, and UTF-8 as is: what providers accept, and a few percent less to write than ASCII escapes.
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def _message_of(body: Any, text: str) -> str:
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return str(err["message"])
        if isinstance(err, str):
            return err
    return text[:300].strip() or "(empty body)"


def error_for_status(
    provider: str,
    status: int,
    message: str,
    headers: Mapping[str, str],
    cls: type[ModelError] | None = None,
) -> ModelError:
    """The crewline error for an HTTP error status (``cls`` overrides the generic choice)."""
    text = f"{provider}: HTTP {status}: {message}"
    if cls is None:
        if status == 501 or (status >= 500 and _UNSUPPORTED_RE.search(message)):
            cls = UnsupportedOperation
        elif status == 429:
            cls = RateLimited
        elif status in (401, 403):
            cls = AuthError
        elif status in (408, 504):
            cls = ModelTimeout
        elif status >= 500:
            cls = ProviderUnavailable
        elif _CONTEXT_RE.search(message):
            cls = ContextTooLong
        elif _POLICY_RE.search(message):
            cls = ContentPolicy
        else:
            cls = BadRequest
    if cls is RateLimited:
        return RateLimited(text, provider=provider, status=status, retry_after=parse_retry_after(headers))
    if cls is AuthError:
        text += " (check the API key for this provider)"
    return cls(text, provider=provider, status=status)


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date)."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
