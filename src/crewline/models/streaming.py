"""Streamed completions: retries and fallbacks until the first chunk, then chunks passed through as they
come, time to first token recorded, and a stream cut off midway raised as a typed error, never a silent
success. A stream that stops early (cut off, failed or abandoned by its consumer) keeps its worst-case
cost: its output was produced and billed, but its usage never arrived.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from ..errors import ProviderUnavailable
from .dispatch import Dispatcher
from .meter import CallContext, CallMeter, MeteredCall
from .providers import Adapter
from .routing import Deployment, Route
from .tokens import estimate_input_tokens, input_token_ceiling
from .types import ModelRequest, ModelResponse, StreamChunk, ToolCall, Usage

__all__ = ["ModelStream", "StreamCall"]


@dataclass(frozen=True)
class StreamCall:
    """What a stream needs from the gateway: the call, and the meter, dispatcher and adapters to make it."""

    route: Route
    request: ModelRequest
    ctx: CallContext
    meter: CallMeter
    dispatcher: Dispatcher
    adapter: Callable[[str], Adapter]


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

    def __init__(self, call: StreamCall) -> None:
        self._call = call
        self.response: ModelResponse | None = None
        self._iter: AsyncIterator[StreamChunk] | None = None

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
        call, request = self._call, self._call.request
        metered = call.meter.open(call.ctx, "stream", request)
        est = estimate_input_tokens(request)
        max_out = request.max_tokens or call.meter.settings.config.max_tokens
        await metered.reserve(call.route, input_token_ceiling(request), max_out)
        it, first, dep = await self._open(metered, est + max_out)
        ttft = metered.elapsed_ms()
        got = _Assembly()
        try:
            chunk: StreamChunk | None = first
            while chunk is not None:
                got.add(chunk)
                yield chunk
                chunk = await anext(it, None)
        except BaseException as e:  # cut off, failed or abandoned by the consumer midway: output was billed
            metered.failed(e, ttft_ms=ttft, maybe_billed=True)
            raise
        self._complete(metered, got, dep, ttft, est)
        await metered.settled()

    async def _open(
        self, metered: MeteredCall, tokens: int
    ) -> tuple[AsyncIterator[StreamChunk], StreamChunk, Deployment]:
        """Route until a deployment yields a first chunk (failures before it are retried and fall back)."""
        call = self._call
        first: list[StreamChunk] = []

        async def attempt(dep: Deployment) -> AsyncIterator[StreamChunk]:
            it = call.adapter(dep.provider).stream(call.request, dep.model).__aiter__()
            first.clear()
            first.append(await it.__anext__())
            return it

        try:
            it, dep, attempts = await call.dispatcher.run(call.route, tokens, attempt)
        except StopAsyncIteration:
            error = ProviderUnavailable(f"{call.route.name}: stream ended before any chunk")
            metered.failed(error)
            raise error from None
        except BaseException as e:
            metered.failed(e)
            raise
        metered.routed(dep, attempts)
        return it, first[0], dep

    def _complete(self, metered: MeteredCall, got: _Assembly, dep: Deployment, ttft: float, est: int) -> None:
        if got.final is None:
            error = ProviderUnavailable(f"{dep.name}: stream ended without a finish", provider=dep.provider)
            metered.failed(error, ttft_ms=ttft, maybe_billed=True)
            raise error
        text = "".join(got.text)
        usage = got.final.usage
        if usage is None or (usage.output_tokens == 0 and (text or got.calls)):
            # Some servers send no usage in streams; an estimate beats recording the call as free.
            usage = Usage(input_tokens=est // 2, output_tokens=max(1, len(text) // 4 + 5 * len(got.calls)))
        priced = metered.price(usage)
        self.response = ModelResponse(
            text=text,
            tool_calls=tuple(got.calls),
            finish_reason=got.final.finish_reason or "stop",
            usage=usage,
            model=dep.model,
            provider=dep.provider,
            deployment=dep.name,
            response_id=got.final.response_id,
            cost=priced.cost,
            price_known=priced.known,
            latency_ms=metered.elapsed_ms(),
            ttft_ms=ttft,
            attempts=metered.record.attempts,
        )
        metered.succeeded(usage, priced, self.response, ttft_ms=ttft)
