"""The gateway: one call that reaches any configured model, never overspends, survives flaky providers and
leaves a record of what it cost.

A call flows: validate the input (before anything is sent) → resolve the name to a route → exact-match
cache → reserve the worst case against every budget in scope (only when one has a limit) → try the route's
deployments with rate limits, breakers, retries honouring ``retry-after`` and fallbacks → price the reply →
settle the budget and record the call in one group-committed write → validate structured output, re-asking
or escalating to the next tier. The books (record, reservation, price, settlement) are kept by the call
meter (:mod:`.meter`), the deployments tried by the dispatcher (:mod:`.dispatch`). The record write is not
awaited by default (``await gateway.flush()`` or ``aclose()`` waits for it): the reservation, held until it
lands, keeps budgets safe meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Unpack, overload

import pydantic

from ..config import Settings
from ..errors import AuthError, ConfigError, InvalidInput, InvalidOutput
from ..store import Database
from .cache import ResponseCache, request_key
from .call_log import CallRecord
from .calls import (
    COMPLETE_FIELDS,
    SCOPE_FIELDS,
    STREAM_FIELDS,
    CallOptions,
    CompleteKeywords,
    CompletionRequest,
    Messages,
    ScopeKeywords,
    StreamKeywords,
    call_arguments,
    canonical,
    refuse_behaviour,
)
from .config import ModelsConfig
from .dispatch import Dispatcher
from .http import HttpClient
from .ledger import BudgetAlert, Ledger
from .limits import SharedLimiter
from .meter import CallContext, CallMeter, MeterSettings
from .prices import Price, PriceTable, shipped_table
from .providers import Adapter, Endpoint, adapter_class
from .routing import Deployment, Router
from .streaming import ModelStream, StreamCall
from .structured import parse_output, prompted, reask_messages, schema_for
from .tokens import estimate_input_tokens, input_token_ceiling, text_token_ceiling
from .types import EmbeddingResponse, ModelRequest, ModelResponse, Usage

__all__ = ["CallContext", "CallOptions", "CompletionRequest", "Gateway", "ModelStream"]

log = logging.getLogger("crewline.models")
_FREE = Price(0.0, 0.0)
_Structured = tuple[pydantic.TypeAdapter[Any], dict[str, Any], str]


@dataclass(slots=True)
class _Call:
    """One completion as the gateway makes it: the canonical request and how to account for it."""

    request: ModelRequest
    ctx: CallContext
    cache: bool | None


class _LowConfidence(Exception):
    def __init__(self, response: ModelResponse) -> None:
        self.response = response


class Gateway:
    """Composes routing, limits, cache, retries, pricing, budgets and call records over the adapters.

    ``adapters`` maps provider names to adapter instances used instead of building one from config (how
    :class:`crewline.testing.ScriptedModel` plugs in). Call records and budget settlements are written
    in the background, batched over ``record_delay`` seconds into one transaction; ``wait_for_records``
    makes every call wait for its own instead. ``flush()`` / ``aclose()`` write whatever is pending.
    ``on_call(record)`` sees every :class:`CallRecord` as the call ends (for metrics and traces);
    ``on_alert(alert)`` every budget crossing 50/80/100% of its limit.
    """

    def __init__(
        self,
        config: ModelsConfig | None = None,
        db: Database | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        adapters: Mapping[str, Adapter] | None = None,
        client: HttpClient | None = None,
        prices: PriceTable | None = None,
        on_alert: Callable[[BudgetAlert], None] | None = None,
        on_call: Callable[[CallRecord], None] | None = None,
        wait_for_records: bool = False,
        record_delay: float = 0.05,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.config = config = config or ModelsConfig()
        self.db = db
        self._env = os.environ if environ is None else environ
        self._overrides = dict(adapters or {})
        self._client = client
        self._own_client = client is None
        self._adapters: dict[str, Adapter] = {}
        self.prices = prices or shipped_table(config.prices)
        self.router = Router(config, set(config.providers) | set(self._overrides), rand=rand)
        self.ledger = Ledger(db, config.budgets, clock, on_alert) if db is not None else None
        self.cache = (
            ResponseCache(db, config.cache.ttl, clock) if db is not None and config.cache.enabled else None
        )
        shared = SharedLimiter(db, clock) if db is not None and db.name == "postgresql" else None
        self.dispatcher = Dispatcher(self.router, config.retry, shared, sleep, rand)
        self.meter = CallMeter(
            MeterSettings(
                config=config,
                price_of=self.price_of,
                db=db,
                ledger=self.ledger,
                cache=self.cache,
                clock=clock,
                on_call=on_call,
                wait_for_records=wait_for_records,
                record_delay=record_delay,
            )
        )

    @classmethod
    def from_settings(cls, settings: Settings, db: Database | None = None, **kwargs: Any) -> Gateway:
        """A gateway configured by the ``[models]`` section of ``crewline.toml``.

        Call payloads go to blobs past the store's ``blob_threshold`` unless ``[models]`` sets its own.
        """
        raw = dict(settings.sections.get("models") or {})
        raw.setdefault("payload_threshold", settings.blob_threshold)
        return cls(ModelsConfig.parse(raw), db, **kwargs)

    @classmethod
    def for_testing(
        cls, model: Adapter, db: Database | None = None, *, config: ModelsConfig | None = None, **kwargs: Any
    ) -> Gateway:
        """A gateway whose calls go to ``model`` (e.g. a ScriptedModel) as provider ``test``.

        Without ``config``, calls naming no model go to ``test/scripted``; with one, name ``test/...``
        targets in its aliases and tiers.
        """
        base = config or ModelsConfig(default="test/scripted")
        return cls(base, db, adapters={"test": model}, **kwargs)

    # -- public API -------------------------------------------------------------------------------------

    @overload
    async def complete(
        self, request: CompletionRequest | ModelRequest, options: CallOptions | None = None
    ) -> ModelResponse: ...

    @overload
    async def complete(
        self, model: str | None = None, messages: Messages = (), **keywords: Unpack[CompleteKeywords]
    ) -> ModelResponse: ...

    async def complete(self, *args: Any, **keywords: Any) -> ModelResponse:
        """Complete a conversation: ``complete(CompletionRequest(...), CallOptions(...))``, or in the
        keyword form ``complete(model, messages, max_tokens=..., budget_scope=..., ...)`` taking the fields
        of both. ``model`` is an alias, tier, deployment or ``provider/model``.

        ``output=Model`` returns ``reply.output``, a validated instance; a reply that fails validation is
        re-asked with the error up to ``output_retries`` times (retries *after* the first attempt; default
        from config), then raises :class:`InvalidOutput` carrying every attempt's usage and cost — or, with
        ``escalate=True``, moves to the next tier. ``confidence(reply) -> bool`` returning False escalates
        too (at the last tier the reply is returned as is). ``cache=True`` opts a non-deterministic request
        into the cache, ``cache=False`` keeps any request out of it.
        """
        asked, opts = call_arguments(args, keywords, COMPLETE_FIELDS)
        canon = canonical(asked, self.config.max_tokens)
        output = asked.output if isinstance(asked, CompletionRequest) else None
        structured = schema_for(output) if output is not None else None
        retries = self.config.output_retries if opts.output_retries is None else opts.output_retries
        if retries < 0:
            raise InvalidInput(f"output_retries must be >= 0, got {retries}")
        name = self._name(canon)
        call = _Call(canon.with_(model=name), self._context(name, opts), opts.cache)
        while True:
            try:
                reply = await self._structured(call, structured, retries)
                if opts.confidence is not None and not opts.confidence(reply):
                    raise _LowConfidence(reply)
                return reply
            except (InvalidOutput, _LowConfidence) as e:
                name = call.request.model
                following = (
                    self.router.next_tier(name) if opts.escalate or opts.confidence is not None else None
                )
                if following is None:
                    if isinstance(e, _LowConfidence):
                        return e.response
                    raise
                log.info("escalating from %s to %s: %s", name, following, type(e).__name__)
                ctx = replace(call.ctx, requested=following)
                call = replace(call, request=call.request.with_(model=following), ctx=ctx)

    @overload
    def stream(
        self, request: CompletionRequest | ModelRequest, options: CallOptions | None = None
    ) -> ModelStream: ...

    @overload
    def stream(
        self, model: str | None = None, messages: Messages = (), **keywords: Unpack[StreamKeywords]
    ) -> ModelStream: ...

    def stream(self, *args: Any, **keywords: Any) -> ModelStream:
        """Stream a completion: ``async for chunk in gateway.stream(...)``; then ``.response`` is the whole.

        Takes what :meth:`complete` takes but ``output`` and the options that change a completion's
        behaviour (cache, escalation, confidence, output retries). Retries and fallbacks apply until the
        first chunk arrives; a stream cut off after that raises :class:`ProviderUnavailable`. Time to first
        token is recorded.
        """
        asked, opts = call_arguments(args, keywords, STREAM_FIELDS)
        canon = canonical(asked, self.config.max_tokens)
        if isinstance(asked, CompletionRequest) and asked.output is not None:
            raise InvalidInput("a stream cannot validate output: use gateway.complete(..., output=...)")
        refuse_behaviour(opts, "a stream")
        name = self._name(canon)
        ctx = self._context(name, opts)
        stream = StreamCall(
            self.router.resolve(name), canon.with_(model=name), ctx, self.meter, self.dispatcher, self.adapter
        )
        return ModelStream(stream)

    async def embed(
        self,
        texts: Sequence[str] | str,
        model: str | None = None,
        options: CallOptions | None = None,
        **keywords: Unpack[ScopeKeywords],
    ) -> EmbeddingResponse:
        """Embed ``texts`` (one vector per text, in order) with retries and fallbacks like a completion;
        ``options`` (or the keywords ``budget_scope``, ``run_id``, ``step``) say whose budget it counts against."""
        items = [texts] if isinstance(texts, str) else list(texts)
        if not items or not all(isinstance(t, str) for t in items):
            raise InvalidInput("texts must be a string or a non-empty list of strings")
        opts = _embed_options(options, dict(keywords))
        name = model or self.config.default or ""
        route = self.router.resolve(name)
        ctx = CallContext(name, dict(opts.budget_scope or {}), opts.run_id, opts.step)
        metered = self.meter.open(ctx, "embed", {"model": name, "input": items})
        est = sum(len(t.encode()) for t in items) // 2 + 1
        await metered.reserve(route, text_token_ceiling(items), 0)

        async def attempt(dep: Deployment) -> EmbeddingResponse:
            return await self.adapter(dep.provider).embed(items, dep.model)

        try:
            reply, dep, attempts = await self.dispatcher.run(route, est, attempt)
        except BaseException as e:
            metered.failed(e)
            raise
        metered.routed(dep, attempts)
        reply.latency_ms = metered.elapsed_ms()
        priced = metered.price(reply.usage)
        reply.cost, reply.price_known = priced.cost, priced.known
        metered.succeeded(reply.usage, priced)
        await metered.settled()
        return reply

    def offers(self, name: str) -> bool:
        """Whether callers from outside the app (the proxy) may name ``name``: an alias or tier, a named
        deployment, or ``provider/model`` of a provider declared under ``[models.providers]`` (or given
        as an adapter). A built-in provider nobody declared is not offered: reaching it on a caller's say
        would spend the server's own environment keys or probe fixed local ports."""
        cfg = self.config
        if name in cfg.aliases or name in cfg.deployments:
            return True
        provider, sep, model = name.partition("/")
        return bool(sep and model) and (provider in cfg.declared_providers or provider in self._overrides)

    def offered(self) -> list[str]:
        """The names :meth:`offers` can list: aliases, tiers and named deployments."""
        return sorted({*self.config.aliases, *self.config.deployments})

    def status(self) -> list[dict[str, Any]]:
        """Live state of every deployment routed to so far: breaker, 429 cool-down, calls in flight."""
        now = time.monotonic()
        return [_deployment_status(d, now) for d in self.router.deployments()]

    async def warm(self) -> None:
        """Make ready what the first calls would otherwise wait for: the database's connections and
        writer, the stored budget limits and the learned input factors (a server calls this at start)."""
        db = self.meter.settings.db
        if db is not None:
            await db.warm()
        if self.ledger is not None:
            await self.ledger.warm()
        await self.meter.calibration.factors()

    async def flush(self) -> None:
        """Wait until every call record and budget settlement so far is committed."""
        await self.meter.flush()

    async def aclose(self) -> None:
        self.meter.close()
        await self.flush()
        for adapter in self._adapters.values():
            await adapter.aclose()
        if self._own_client and self._client is not None:
            await self._client.aclose()

    async def __aenter__(self) -> Gateway:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- adapters and credentials -----------------------------------------------------------------------

    def adapter(self, provider: str) -> Adapter:
        """The adapter for ``provider``, built once; its key is read from the environment only then."""
        found = self._adapters.get(provider) or self._overrides.get(provider)
        if found is not None:
            return found
        cfg = self.config.providers.get(provider)
        if cfg is None:
            raise ConfigError(f"provider {provider!r} is not configured under [models.providers]")
        key = None
        if cfg.api_key_env:
            key = self._env.get(cfg.api_key_env)
            if not key:
                raise AuthError(
                    f"provider {provider!r} needs an API key: set the environment variable {cfg.api_key_env}",
                    provider=provider,
                )
        if self._client is None:
            self._client = HttpClient(max_connections=256)
        endpoint = Endpoint(
            provider,
            cfg.format,
            cfg.base_url,
            key,
            cfg.headers,
            cfg.timeout or self.config.timeout,
            cfg.options,
        )
        adapter = self._adapters[provider] = adapter_class(cfg.format)(endpoint, self._client)
        return adapter

    def price_of(self, dep: Deployment) -> Price | None:
        cfg = self.config.providers.get(dep.provider)
        if cfg is not None and cfg.free:
            return _FREE
        if dep.provider in self._overrides and dep.provider not in self.config.providers:
            return _FREE  # a test double costs nothing, knowingly
        return self.prices.lookup(dep.provider, dep.model)

    def context_window(self, name: str | None) -> int | None:
        """The context window a request to ``name`` must fit: the smallest known among the deployments it
        may reach (a fallback can land on any of them); ``None`` when none is known."""
        known = [
            window
            for dep in self.router.resolve(name).deployments
            for window in (self.prices.context(dep.provider, dep.model), self._served_context(dep.provider))
            if window is not None
        ]
        return min(known, default=None)

    def _served_context(self, provider: str) -> int | None:
        """The window the provider itself serves (a local server's context size), if it sets one."""
        cfg = self.config.providers.get(provider)
        if cfg is None:
            return None
        try:
            return adapter_class(cfg.format).served_context(cfg.options)
        except ConfigError:  # a format no adapter speaks: its calls fail with that error anyway
            return None

    def cheapest_tier(self) -> str | None:
        """The first tier of ``[models.tiers]`` (the default model without tiers): where summaries go."""
        return self.config.tier_order[0] if self.config.tier_order else self.config.default

    # -- one structured completion ----------------------------------------------------------------------

    async def _structured(self, call: _Call, structured: _Structured | None, retries: int) -> ModelResponse:
        if structured is None:
            return await self._once(call, validated=True)
        adapter, schema, schema_name = structured
        call = replace(call, request=call.request.with_(response_schema=schema, schema_name=schema_name))
        attempts: list[dict[str, Any]] = []
        total, cost, known, tries = Usage(), 0.0, True, 0
        messages = call.request.messages
        error: Exception | None = None
        for _ in range(retries + 1):
            asked = replace(call, request=call.request.with_(messages=messages))
            reply = await self._once(asked, validated=False)
            total, cost, known, tries = (
                total + reply.usage,
                cost + reply.cost,
                known and reply.price_known,
                tries + reply.attempts,
            )
            try:
                reply.output = parse_output(adapter, reply.text)
            except (ValueError, pydantic.ValidationError) as e:
                error = e
                attempts.append(_failed_attempt(reply, e))
                messages = (*messages, *reask_messages(reply.text, e))
                continue
            reply.usage, reply.cost, reply.price_known, reply.attempts = total, cost, known, tries
            if not reply.cached:
                await self._cache_put(call.request, reply, call.cache)
            return reply
        raise InvalidOutput(
            f"{call.request.model}: reply did not validate as {schema_name} after {retries + 1} attempt(s): "
            f"{error}",
            attempts=attempts,
        )

    async def _once(self, call: _Call, validated: bool) -> ModelResponse:
        """One logical call: cache, reserve, route with retries, price, settle and record."""
        request = call.request
        metered = self.meter.open(call.ctx, "complete", request)
        route = self.router.resolve(request.model)
        key = self._cache_key(request, call.cache)
        if key is not None and self.cache is not None:
            hit = await self.cache.get(key)
            if hit is not None:
                hit.latency_ms = metered.elapsed_ms()
                metered.cache_hit(hit, key)
                await metered.settled()
                return hit
        est = estimate_input_tokens(request)
        max_out = request.max_tokens or self.config.max_tokens
        await metered.reserve(route, input_token_ceiling(request), max_out)

        async def attempt(dep: Deployment) -> ModelResponse:
            adapter = self.adapter(dep.provider)
            req = request if adapter.native_schema or request.response_schema is None else prompted(request)
            return await adapter.complete(req, dep.model)

        try:
            reply, dep, attempts = await self.dispatcher.run(route, est + max_out, attempt)
        except BaseException as e:
            # Cancelled midway, the provider may have done (and billed) the work.
            metered.failed(e, maybe_billed=isinstance(e, asyncio.CancelledError))
            raise
        metered.routed(dep, attempts)
        reply.latency_ms = metered.elapsed_ms()
        reply.deployment, reply.attempts, reply.provider = dep.name, attempts, dep.provider
        priced = metered.price(reply.usage)
        reply.cost, reply.price_known = priced.cost, priced.known
        put = key if validated and self.cache is not None else None
        metered.succeeded(reply.usage, priced, reply, cache_key=put)
        await metered.settled()
        return reply

    # -- cache and input --------------------------------------------------------------------------------

    def _cache_key(self, request: ModelRequest, cache: bool | None) -> str | None:
        if self.cache is None or cache is False:
            return None
        if cache is True or request.temperature == 0:
            return request_key(request)
        return None

    async def _cache_put(self, request: ModelRequest, reply: ModelResponse, cache: bool | None) -> None:
        key = self._cache_key(request, cache)
        if key is None or self.cache is None or self.db is None:
            return
        cache_ = self.cache
        await self.db.write(lambda conn: cache_.put_in(conn, key, reply))

    def _name(self, request: ModelRequest) -> str:
        """The name asked for (the configured default when none); an unknown name fails here, before
        anything is sent."""
        name = request.model or self.config.default or ""
        self.router.resolve(name)
        return name

    def _context(self, name: str, options: CallOptions) -> CallContext:
        ctx = CallContext(name, dict(options.budget_scope or {}), options.run_id, options.step)
        if self.ledger is not None:
            self.ledger.scopes(ctx.scope)  # malformed budget scopes fail before anything is sent
        return ctx


def _embed_options(options: CallOptions | None, keywords: dict[str, Any]) -> CallOptions:
    if options is not None and keywords:
        raise TypeError(f"got {', '.join(sorted(keywords))} beside options: put them in the CallOptions")
    unknown = sorted(set(keywords) - SCOPE_FIELDS)
    if unknown:
        raise TypeError(f"got an unexpected keyword argument {unknown[0]!r}")
    opts = options or CallOptions(**keywords)
    refuse_behaviour(opts, "an embedding")
    return opts


def _failed_attempt(reply: ModelResponse, error: Exception) -> dict[str, Any]:
    """What :class:`InvalidOutput` keeps of an attempt whose reply did not validate."""
    return {
        "text": reply.text,
        "error": str(error),
        "usage": reply.usage,
        "cost": reply.cost,
        "model": reply.model,
        "provider": reply.provider,
    }


def _deployment_status(dep: Deployment, now: float) -> dict[str, Any]:
    return {
        "deployment": dep.name,
        "provider": dep.provider,
        "model": dep.model,
        "breaker": dep.breaker.state,
        "cooling_down_s": round(max(0.0, dep.cooldown_until - now), 3),
        "in_flight": dep.in_flight,
    }
