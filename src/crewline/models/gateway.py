"""The gateway: one call that reaches any configured model, never overspends, survives flaky providers and
leaves a record of what it cost.

A call flows: validate the input (before anything is sent) → resolve the name to a route → exact-match
cache → reserve the worst case against every budget in scope (only when one has a limit) → try the route's
deployments with rate limits, breakers, retries honouring ``retry-after`` and fallbacks → price the reply →
settle the budget and record the call in one group-committed write → validate structured output, re-asking
or escalating to the next tier. The record write is not awaited by default (``await gateway.flush()`` or
``aclose()`` waits for it): the reservation, held until it lands, keeps budgets safe meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pydantic

from ..config import Settings
from ..errors import (
    AuthError,
    BadRequest,
    ConfigError,
    ContextTooLong,
    InvalidInput,
    InvalidOutput,
    ModelError,
    PriceUnknown,
    ProviderUnavailable,
    RateLimited,
)
from ..store import Conn, Database
from .cache import ResponseCache, request_key
from .config import ModelsConfig
from .http import HttpClient
from .ledger import BudgetAlert, Ledger, Reservation, from_nusd, to_nusd
from .limits import LocalLimiter, SharedLimiter
from .prices import Price, PriceTable, shipped_table
from .providers import Adapter, Endpoint, adapter_class
from .records import CallRecord, insert_record
from .resilience import backoff_delay, counts_against_breaker
from .routing import Deployment, Route, Router
from .streaming import ModelStream
from .structured import parse_output, prompted, reask_messages, schema_for
from .tokens import estimate_input_tokens
from .types import (
    EmbeddingResponse,
    Message,
    ModelRequest,
    ModelResponse,
    Tool,
    Usage,
    coerce_messages,
    coerce_tools,
)

__all__ = ["CallContext", "Gateway", "ModelStream"]

T = TypeVar("T")

log = logging.getLogger("crewline.models")
_FREE = Price(0.0, 0.0)


@dataclass(frozen=True)
class CallContext:
    """Who is asking: budget scope and the run/step that made the call (for the record)."""

    requested: str
    scope: Mapping[str, str] = field(default_factory=dict)
    run_id: str | None = None
    step: int | None = None


@dataclass
class _Priced:
    cost: float
    known: bool


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
        self._local_limits = LocalLimiter()
        self._shared_limits = SharedLimiter(db, clock) if db is not None and db.name == "postgresql" else None
        self._wait_for_records = wait_for_records
        self._sleep = sleep
        self._clock = clock
        self._rand = rand
        self._pending: set[asyncio.Task[Any]] = set()
        self._queued: list[Callable[[Conn], list[BudgetAlert]]] = []
        self._write_handle: asyncio.TimerHandle | None = None
        self._record_delay = record_delay
        self._on_call = on_call
        self._unpriced: set[str] = set()

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

    async def complete(
        self,
        model: str | None = None,
        messages: Sequence[Message | Mapping[str, Any]] | str = (),
        *,
        tools: Sequence[Tool | Mapping[str, Any]] | None = None,
        tool_choice: str | None = None,
        output: type[Any] | None = None,
        output_retries: int | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        stop: Sequence[str] | None = None,
        budget_scope: Mapping[str, str] | None = None,
        run_id: str | None = None,
        step: int | None = None,
        cache: bool | None = None,
        escalate: bool = False,
        confidence: Callable[[ModelResponse], bool] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> ModelResponse:
        """Complete a conversation. ``model`` is an alias, tier, deployment or ``provider/model``.

        ``output=Model`` returns ``reply.output``, a validated instance; a reply that fails validation is
        re-asked with the error up to ``output_retries`` times (retries *after* the first attempt; default
        from config), then raises :class:`InvalidOutput` carrying every attempt's usage and cost — or, with
        ``escalate=True``, moves to the next tier. ``confidence(reply) -> bool`` returning False escalates
        too (at the last tier the reply is returned as is). ``cache=True`` opts a non-deterministic request
        into the cache, ``cache=False`` keeps any request out of it.
        """
        request = self._request(
            model, messages, tools, tool_choice, max_tokens, temperature, top_p, stop, extra
        )
        structured = schema_for(output) if output is not None else None
        retries = self.config.output_retries if output_retries is None else output_retries
        if retries < 0:
            raise InvalidInput(f"output_retries must be >= 0, got {retries}")
        name = model or self.config.default or ""
        ctx = CallContext(name, dict(budget_scope or {}), run_id, step)
        self.router.resolve(name)  # unknown names fail here, before anything is sent
        if self.ledger is not None:
            self.ledger.scopes(ctx.scope)  # and so do malformed budget scopes
        while True:
            try:
                reply = await self._structured(
                    name, request.with_(model=name), structured, retries, ctx, cache
                )
                if confidence is not None and not confidence(reply):
                    raise _LowConfidence(reply)
                return reply
            except (InvalidOutput, _LowConfidence) as e:
                following = self.router.next_tier(name) if escalate or confidence is not None else None
                if following is None:
                    if isinstance(e, _LowConfidence):
                        return e.response
                    raise
                log.info("escalating from %s to %s: %s", name, following, type(e).__name__)
                name = following
                ctx = CallContext(name, ctx.scope, ctx.run_id, ctx.step)

    def stream(
        self,
        model: str | None = None,
        messages: Sequence[Message | Mapping[str, Any]] | str = (),
        *,
        tools: Sequence[Tool | Mapping[str, Any]] | None = None,
        tool_choice: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        stop: Sequence[str] | None = None,
        budget_scope: Mapping[str, str] | None = None,
        run_id: str | None = None,
        step: int | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> ModelStream:
        """Stream a completion: ``async for chunk in gateway.stream(...)``; then ``.response`` is the whole.

        Retries and fallbacks apply until the first chunk arrives; a stream cut off after that raises
        :class:`ProviderUnavailable`. Time to first token is recorded.
        """
        request = self._request(
            model, messages, tools, tool_choice, max_tokens, temperature, top_p, stop, extra
        )
        name = model or self.config.default or ""
        route = self.router.resolve(name)
        ctx = CallContext(name, dict(budget_scope or {}), run_id, step)
        if self.ledger is not None:
            self.ledger.scopes(ctx.scope)
        return ModelStream(self, route, request.with_(model=name), ctx)

    async def embed(
        self,
        texts: Sequence[str] | str,
        model: str | None = None,
        *,
        budget_scope: Mapping[str, str] | None = None,
        run_id: str | None = None,
        step: int | None = None,
    ) -> EmbeddingResponse:
        """Embed ``texts`` (one vector per text, in order) with retries and fallbacks like a completion."""
        items = [texts] if isinstance(texts, str) else list(texts)
        if not items or not all(isinstance(t, str) for t in items):
            raise InvalidInput("texts must be a string or a non-empty list of strings")
        name = model or self.config.default or ""
        route = self.router.resolve(name)
        ctx = CallContext(name, dict(budget_scope or {}), run_id, step)
        record = self._record(ctx, "embed", {"model": name, "input": items})
        est = sum(len(t.encode()) for t in items) // 2 + 1
        scopes, reservation = await self._reserve(route, ctx, est, 0)
        start = time.perf_counter()

        async def attempt(dep: Deployment) -> EmbeddingResponse:
            return await self.adapter(dep.provider).embed(items, dep.model)

        try:
            reply, dep, attempts = await self._run_route(route, est, attempt)
        except BaseException as e:
            self._finish(record, scopes, reservation, error=e, start=start)
            raise
        reply.latency_ms = (time.perf_counter() - start) * 1000
        priced = self._price(dep, reply.usage)
        reply.cost, reply.price_known = priced.cost, priced.known
        record.attempts = attempts
        self._finish(record, scopes, reservation, dep=dep, usage=reply.usage, priced=priced, start=start)
        await self._settled()
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
        return [
            {"deployment": d.name, "provider": d.provider, "model": d.model, "breaker": d.breaker.state,
             "cooling_down_s": round(max(0.0, d.cooldown_until - now), 3), "in_flight": d.in_flight}
            for d in self.router.deployments()
        ]  # fmt: skip

    async def flush(self) -> None:
        """Wait until every call record and budget settlement so far is committed."""
        while self._pending or self._queued:
            if self._write_handle is not None:
                self._write_handle.cancel()
            self._spawn_write()
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    async def aclose(self) -> None:
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

    # -- one structured completion ----------------------------------------------------------------------

    async def _structured(
        self,
        name: str,
        request: ModelRequest,
        structured: tuple[pydantic.TypeAdapter[Any], dict[str, Any], str] | None,
        retries: int,
        ctx: CallContext,
        cache: bool | None,
    ) -> ModelResponse:
        if structured is None:
            return await self._once(name, request, ctx, cache, validated=True)
        adapter, schema, schema_name = structured
        request = request.with_(response_schema=schema, schema_name=schema_name)
        attempts: list[dict[str, Any]] = []
        total, cost, known, tries = Usage(), 0.0, True, 0
        messages = request.messages
        error: Exception | None = None
        for _ in range(retries + 1):
            reply = await self._once(name, request.with_(messages=messages), ctx, cache, validated=False)
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
                attempts.append(
                    {
                        "text": reply.text,
                        "error": str(e),
                        "usage": reply.usage,
                        "cost": reply.cost,
                        "model": reply.model,
                        "provider": reply.provider,
                    }
                )
                messages = (*messages, *reask_messages(reply.text, e))
                continue
            reply.usage, reply.cost, reply.price_known, reply.attempts = total, cost, known, tries
            if not reply.cached:
                await self._cache_put(request, reply, cache)
            return reply
        raise InvalidOutput(
            f"{name}: reply did not validate as {schema_name} after {retries + 1} attempt(s): {error}",
            attempts=attempts,
        )

    async def _once(
        self, name: str, request: ModelRequest, ctx: CallContext, cache: bool | None, validated: bool
    ) -> ModelResponse:
        """One logical call: cache, reserve, route with retries, price, settle and record."""
        start = time.perf_counter()
        route = self.router.resolve(name)
        record = self._record(ctx, "complete", request)
        key = self._cache_key(request, cache)
        if key is not None and self.cache is not None:
            hit = await self.cache.get(key)
            if hit is not None:
                hit.latency_ms = (time.perf_counter() - start) * 1000
                record.cache_hit, record.attempts = True, 0
                self._finish(
                    record,
                    (),
                    None,
                    usage=hit.usage,
                    start=start,
                    response=hit,
                    cache_hit_key=key,
                    model=(hit.provider, hit.model, hit.deployment),
                )
                await self._settled()
                return hit
        est = estimate_input_tokens(request)
        max_out = request.max_tokens or self.config.max_tokens
        scopes, reservation = await self._reserve(route, ctx, est, max_out)

        async def attempt(dep: Deployment) -> ModelResponse:
            adapter = self.adapter(dep.provider)
            req = request if adapter.native_schema or request.response_schema is None else prompted(request)
            return await adapter.complete(req, dep.model)

        try:
            reply, dep, attempts = await self._run_route(route, est + max_out, attempt)
        except BaseException as e:
            record.attempts = getattr(e, "_crewline_attempts", 1)
            billed = isinstance(e, asyncio.CancelledError)  # the provider may have done (and billed) the work
            self._finish(record, scopes, reservation, error=e, start=start, maybe_billed=billed)
            raise
        reply.latency_ms = (time.perf_counter() - start) * 1000
        reply.deployment, reply.attempts, reply.provider = dep.name, attempts, dep.provider
        priced = self._price(dep, reply.usage)
        reply.cost, reply.price_known = priced.cost, priced.known
        record.attempts = attempts
        put = key if validated and self.cache is not None else None
        self._finish(
            record,
            scopes,
            reservation,
            dep=dep,
            usage=reply.usage,
            priced=priced,
            start=start,
            response=reply,
            cache_put=(put, reply) if put else None,
        )
        await self._settled()
        return reply

    # -- routing with retries, breakers, limits and fallbacks -------------------------------------------

    async def _run_route(
        self, route: Route, tokens: int, attempt: Callable[[Deployment], Awaitable[T]]
    ) -> tuple[T, Deployment, int]:
        last: BaseException | None = None
        tries = 0
        for pool in route.steps:
            tried: set[Deployment] = set()
            for n in range(1, self.config.retry.attempts + 1):
                dep = await self._admit(pool, tokens, tried)
                if dep is None:
                    last = last or ProviderUnavailable(
                        f"{route.name}: every deployment of {[d.name for d in pool]} is unavailable "
                        "(circuit open or cooling down after 429)"
                    )
                    break
                tries += 1
                dep.in_flight += 1
                try:
                    result = await attempt(dep)
                except ModelError as e:
                    last = e
                    self._observe_failure(dep, e)
                    if not e.retryable:
                        if _falls_back(e):
                            break
                        e._crewline_attempts = tries  # type: ignore[attr-defined]
                        raise
                    if n == self.config.retry.attempts:
                        break
                    tried.add(dep)
                    if any(d not in tried for d in pool):
                        continue  # another deployment of the pool can take the retry right away
                    delay = backoff_delay(self.config.retry, n, getattr(e, "retry_after", None), self._rand)
                    if delay is None:
                        break  # the provider wants longer than we wait: try the fallback instead
                    await self._sleep(delay)
                    dep.cooldown_until = 0.0  # we have waited out what it asked for
                    tried.clear()
                    continue
                finally:
                    dep.in_flight -= 1
                dep.breaker.record(True)
                return result, dep, tries
        assert last is not None
        last._crewline_attempts = tries  # type: ignore[attr-defined]
        raise last

    async def _admit(
        self, pool: Sequence[Deployment], tokens: int, tried: set[Deployment]
    ) -> Deployment | None:
        """A deployment with room under its RPM/TPM limits, waiting (bounded) for one when all are full."""
        for _ in range(3):
            dep = self.router.pick(pool, tried) or self.router.pick(pool)
            if dep is None:
                return None
            wait = self._local_limits.acquire(dep, tokens)
            if wait == 0.0 and self._shared_limits is not None:
                wait = await self._shared_limits.acquire(dep, tokens)
            if wait == 0.0:
                return dep
            others = [d for d in pool if d is not dep and d not in tried]
            if others:
                tried.add(dep)
                continue
            if wait > self.config.retry.max_retry_after:
                raise RateLimited(
                    f"{dep.name}: over its rpm/tpm limit for {wait:.1f}s more",
                    provider=dep.provider,
                    status=None,
                    retry_after=wait,
                )
            await self._sleep(wait)
        return self.router.pick(pool)

    def _observe_failure(self, dep: Deployment, e: ModelError) -> None:
        if isinstance(e, RateLimited):
            cool = e.retry_after if e.retry_after is not None else self.config.retry.base_delay
            dep.cooldown_until = time.monotonic() + min(cool, self.config.retry.max_retry_after)
        elif counts_against_breaker(e):
            dep.breaker.record(False)
        log.info("%s failed: %s: %s", dep.name, type(e).__name__, e)

    # -- budgets ----------------------------------------------------------------------------------------

    async def _reserve(
        self, route: Route, ctx: CallContext, tokens_in: int, tokens_out: int
    ) -> tuple[Mapping[str, int | None], Reservation | None]:
        """Hold the call's worst case against every budget in scope that has a limit.

        Every deployment of the route must have a price then: a call that cannot be priced is refused
        rather than reserved at some guessed ceiling, because its real cost stays unknown after the call
        too, so a guess would either block honest calls or let the budget be overspent unseen. The fix is
        the operator's: a price under [models.prices].
        """
        if self.config.strict_prices:
            self._priced(route, "strict_prices is on")
        if self.ledger is None:
            return {}, None
        scopes = self.ledger.scopes(ctx.scope)
        if not await self.ledger.has_limit(scopes):
            return scopes, None
        prices = self._priced(route, "the call counts against a budget with a limit")
        worst = max(price.worst_case(tokens_in, tokens_out) for price in prices)
        return scopes, await self.ledger.reserve(scopes, to_nusd(worst))

    def _priced(self, route: Route, why: str) -> list[Price]:
        """The price of each deployment ``route`` may use; :class:`PriceUnknown` if one has none."""
        prices: list[Price] = []
        for dep in route.deployments:
            price = self.price_of(dep)
            if price is None:
                raise PriceUnknown(
                    f"{route.name}: no known price for {dep.key} and {why}, so the call was refused: "
                    f'use a model with a price, or add [models.prices."{dep.key}"] with input and output '
                    "(USD per million tokens)"
                )
            prices.append(price)
        return prices

    def _price(self, dep: Deployment, usage: Usage) -> _Priced:
        price = self.price_of(dep)
        if price is None:
            if dep.key not in self._unpriced:
                self._unpriced.add(dep.key)
                log.warning("no price known for %s: its calls are recorded with price_known=false", dep.key)
            return _Priced(0.0, False)
        return _Priced(price.cost(usage), True)

    # -- records and cache ------------------------------------------------------------------------------

    def _record(self, ctx: CallContext, kind: str, request: Any) -> CallRecord:
        return CallRecord(
            requested=ctx.requested,
            kind=kind,
            started_at=self._clock(),
            run_id=ctx.run_id,
            step=ctx.step,
            workflow=ctx.scope.get("workflow"),
            virtual_key=ctx.scope.get("key"),
            request=request if self.config.record_payloads else None,
        )

    def _finish(
        self,
        record: CallRecord,
        scopes: Mapping[str, int | None] | Sequence[str],
        reservation: Reservation | None,
        *,
        start: float,
        dep: Deployment | None = None,
        usage: Usage | None = None,
        priced: _Priced | None = None,
        error: BaseException | None = None,
        response: Any = None,
        cache_put: tuple[str, ModelResponse] | None = None,
        cache_hit_key: str | None = None,
        model: tuple[str, str, str] | None = None,
        ttft_ms: float | None = None,
        maybe_billed: bool = False,
    ) -> None:
        """Settle the budget, record the call and update the cache in one write (awaited or not)."""
        self._fill(
            record, reservation, start, dep, usage, priced, error, response, model, ttft_ms, maybe_billed
        )
        if self._on_call is not None:
            try:
                self._on_call(record)
            except Exception:  # an observer's bug must not fail the call it observes
                log.exception("on_call observer failed")
        if self.db is None:
            return
        ledger, cache, cfg = self.ledger, self.cache, self.config
        limits = dict(scopes) if isinstance(scopes, Mapping) else {}
        cost = to_nusd(record.cost)

        def write(conn: Conn) -> list[BudgetAlert]:
            alerts: list[BudgetAlert] = []
            if ledger is not None and (reservation is not None or cost):
                alerts = ledger.settle_in(conn, reservation, list(limits), cost, limits)
            insert_record(conn, record, cfg.payload_threshold, cfg.record_payloads)
            if cache is not None and cache_put is not None:
                cache.put_in(conn, *cache_put)
            if cache is not None and cache_hit_key is not None:
                cache.hit_in(conn, cache_hit_key)
            return alerts

        self._queued.append(write)
        if self._wait_for_records:
            self._spawn_write()
        elif self._write_handle is None:
            self._write_handle = asyncio.get_running_loop().call_later(self._record_delay, self._spawn_write)

    def _fill(
        self,
        record: CallRecord,
        reservation: Reservation | None,
        start: float,
        dep: Deployment | None,
        usage: Usage | None,
        priced: _Priced | None,
        error: BaseException | None,
        response: Any,
        model: tuple[str, str, str] | None,
        ttft_ms: float | None,
        maybe_billed: bool,
    ) -> None:
        """Complete a call's record with what the call came to."""
        record.latency_ms = (time.perf_counter() - start) * 1000
        record.ttft_ms = ttft_ms
        if dep is not None:
            record.provider, record.model, record.deployment = dep.provider, dep.model, dep.name
        elif model is not None:
            record.provider, record.model, record.deployment = model
        if usage is not None:
            record.usage = usage
        if maybe_billed and priced is None:
            # Real usage unknown: keep the worst case reserved (or flag the cost unknown), never count $0.
            priced = _Priced(from_nusd(reservation.amount), True) if reservation else _Priced(0.0, False)
        if priced is not None:
            record.cost, record.price_known = priced.cost, priced.known
        if error is not None:
            record.status, record.error_class, record.error_message = (
                "error",
                type(error).__name__,
                str(error),
            )
        if self.config.record_payloads and response is not None:
            record.response = response

    def _spawn_write(self) -> None:
        """Write every queued record in one transaction (one commit for a burst of calls)."""
        self._write_handle = None
        batch, self._queued = self._queued, []
        if batch:
            task = asyncio.ensure_future(self._write(batch))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _settled(self) -> None:
        """With ``wait_for_records``, return only once the call's record and settlement are committed."""
        if self._wait_for_records:
            await self.flush()

    async def _write(self, batch: list[Callable[[Conn], list[BudgetAlert]]]) -> None:
        assert self.db is not None

        def write_all(conn: Conn) -> list[BudgetAlert]:
            return [alert for fn in batch for alert in fn(conn)]

        try:
            alerts = await self.db.write(write_all)
        except Exception:
            alerts = []  # one bad write must not take the others down: retry them one by one
            for fn in batch:
                try:
                    alerts += await self.db.write(fn)
                except Exception:
                    log.exception("could not record a model call")
        if self.ledger is not None and alerts:
            self.ledger.emit(alerts)

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

    # -- input ------------------------------------------------------------------------------------------

    def _request(
        self,
        model: str | None,
        messages: Sequence[Message | Mapping[str, Any]] | str,
        tools: Sequence[Tool | Mapping[str, Any]] | None,
        tool_choice: str | None,
        max_tokens: int | None,
        temperature: float | None,
        top_p: float | None,
        stop: Sequence[str] | None,
        extra: Mapping[str, Any] | None,
    ) -> ModelRequest:
        if model is not None and (not isinstance(model, str) or not model):
            raise InvalidInput(
                f"model must be a non-empty string naming an alias, tier or provider/model, got {model!r}"
            )
        if max_tokens is not None and (
            isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens <= 0
        ):
            raise InvalidInput(f"max_tokens must be a positive integer, got {max_tokens!r}")
        if temperature is not None and not 0 <= temperature <= 2:
            raise InvalidInput(f"temperature must be between 0 and 2, got {temperature}")
        if top_p is not None and not 0 < top_p <= 1:
            raise InvalidInput(f"top_p must be in (0, 1], got {top_p}")
        tool_defs = coerce_tools(tools)
        if (
            tool_choice is not None
            and tool_choice not in ("auto", "none", "required")
            and tool_choice not in {t.name for t in tool_defs}
        ):
            raise InvalidInput(
                f"tool_choice {tool_choice!r} is not auto, none, required or the name of a given tool"
            )
        return ModelRequest(
            model=model or "",
            messages=coerce_messages(messages),
            tools=tool_defs,
            tool_choice=tool_choice,
            max_tokens=max_tokens or self.config.max_tokens,
            temperature=temperature,
            top_p=top_p,
            stop=tuple(stop or ()),
            extra=dict(extra or {}),
        )


def _falls_back(e: ModelError) -> bool:
    """Whether a non-retryable error is worth the next fallback (another provider may take it)."""
    if isinstance(e, ContextTooLong):
        return True
    return not isinstance(e, BadRequest)
