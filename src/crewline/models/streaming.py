"""Streamed completions: retries and fallbacks until the first chunk, then chunks passed through as they
come, time to first token recorded, and a stream cut off midway raised as a typed error, never a silent
success. A stream that stops early (cut off, failed or abandoned by its consumer) keeps its worst-case
cost: its output was produced and billed, but its usage never arrived.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import ProviderUnavailable
from .ledger import Reservation
from .records import CallRecord
from .routing import Deployment, Route
from .tokens import estimate_input_tokens
from .types import ModelRequest, ModelResponse, StreamChunk, ToolCall, Usage

if TYPE_CHECKING:
    from collections.abc import Mapping

    from .gateway import CallContext, Gateway

__all__ = ["ModelStream"]


@dataclass
class _Assembly:
    text: list[str] = field(default_factory=list)
    calls: list[ToolCall] = field(default_factory=list)
    final: StreamChunk | None = None

    def add(self, chunk: StreamChunk) -> None:
        if chunk.finish_reason is not None:
            self.final = chunk
        if chunk.tool_call is not None:
            self.calls.append(chunk.tool_call)
        if chunk.text:
            self.text.append(chunk.text)


class ModelStream:
    """An in-progress streamed completion; iterate it for :class:`StreamChunk`s, then read ``.response``.

    Use ``async with gateway.stream(...) as stream`` to be sure a stream abandoned midway is closed and
    recorded at once rather than when the garbage collector gets to it.
    """

    def __init__(self, gateway: Gateway, route: Route, request: ModelRequest, ctx: CallContext) -> None:
        self._gw = gateway
        self._route = route
        self._request = request
        self._ctx = ctx
        self.response: ModelResponse | None = None
        self._iter: AsyncIterator[StreamChunk] | None = None
        self._start = 0.0
        self._record: CallRecord | None = None
        self._scopes: Mapping[str, int | None] = {}
        self._reservation: Reservation | None = None

    def __aiter__(self) -> AsyncIterator[StreamChunk]:
        if self._iter is None:
            self._iter = self._run()
        return self._iter

    async def __aenter__(self) -> ModelStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop early: the connection is closed and the call recorded (its worst case kept as the cost)."""
        if self._iter is not None:
            await self._iter.aclose()  # type: ignore[attr-defined]

    async def text(self) -> str:
        """Consume the stream and return the whole text."""
        async for _ in self:
            pass
        assert self.response is not None
        return self.response.text

    async def _run(self) -> AsyncIterator[StreamChunk]:
        gw = self._gw
        self._start = time.perf_counter()
        self._record = record = gw._record(self._ctx, "stream", self._request)
        est = estimate_input_tokens(self._request)
        max_out = self._request.max_tokens or gw.config.max_tokens
        self._scopes, self._reservation = await gw._reserve(self._route, self._ctx, est, max_out)
        it, first, dep, attempts = await self._open(est + max_out)
        ttft = (time.perf_counter() - self._start) * 1000
        record.attempts = attempts
        got = _Assembly()
        try:
            chunk: StreamChunk | None = first
            while chunk is not None:
                got.add(chunk)
                yield chunk
                chunk = await anext(it, None)
        except BaseException as e:  # cut off, failed or abandoned by the consumer midway: output was billed
            self._fail(e, dep, ttft, maybe_billed=True)
            raise
        self._complete(got, dep, attempts, ttft, est)
        await gw._settled()

    async def _open(self, tokens: int) -> tuple[AsyncIterator[StreamChunk], StreamChunk, Deployment, int]:
        """Route until a deployment yields a first chunk (failures before it are retried and fall back)."""
        first: list[StreamChunk] = []

        async def attempt(dep: Deployment) -> AsyncIterator[StreamChunk]:
            it = self._gw.adapter(dep.provider).stream(self._request, dep.model).__aiter__()
            first.clear()
            first.append(await it.__anext__())
            return it

        try:
            it, dep, attempts = await self._gw._run_route(self._route, tokens, attempt)
        except StopAsyncIteration:
            error = ProviderUnavailable(f"{self._route.name}: stream ended before any chunk")
            self._fail(error, None, None)
            raise error from None
        except BaseException as e:
            self._fail(e, None, None)
            raise
        return it, first[0], dep, attempts

    def _fail(
        self, error: BaseException, dep: Deployment | None, ttft: float | None, maybe_billed: bool = False
    ) -> None:
        assert self._record is not None
        self._gw._finish(self._record, self._scopes, self._reservation, dep=dep, error=error, start=self._start,
                         ttft_ms=ttft, maybe_billed=maybe_billed)  # fmt: skip

    def _complete(self, got: _Assembly, dep: Deployment, attempts: int, ttft: float, est: int) -> None:
        if got.final is None:
            error = ProviderUnavailable(f"{dep.name}: stream ended without a finish", provider=dep.provider)
            self._fail(error, dep, ttft, maybe_billed=True)
            raise error
        text = "".join(got.text)
        usage = got.final.usage
        if usage is None or (usage.output_tokens == 0 and (text or got.calls)):
            # Some servers send no usage in streams; an estimate beats recording the call as free.
            usage = Usage(input_tokens=est // 2, output_tokens=max(1, len(text) // 4 + 5 * len(got.calls)))
        priced = self._gw._price(dep, usage)
        self.response = ModelResponse(
            text=text, tool_calls=tuple(got.calls), finish_reason=got.final.finish_reason or "stop", usage=usage,
            model=dep.model, provider=dep.provider, deployment=dep.name, response_id=got.final.response_id,
            cost=priced.cost, price_known=priced.known, latency_ms=(time.perf_counter() - self._start) * 1000,
            ttft_ms=ttft, attempts=attempts,
        )  # fmt: skip
        assert self._record is not None
        self._gw._finish(self._record, self._scopes, self._reservation, dep=dep, usage=usage, priced=priced,
                         start=self._start, response=self.response, ttft_ms=ttft)  # fmt: skip
