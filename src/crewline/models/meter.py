"""The call meter: what every gateway call (completion, stream, embedding) owes the books.

A call opens a record, reserves its worst case against every budget in scope (only when one has a limit:
the input at :func:`~crewline.models.tokens.input_token_ceiling` times what :mod:`.calibration` learned
the model bills past it, the output at ``max_tokens``), prices what the reply used and, as it ends, settles the budget and writes its record in one transaction.
It ends one of three ways, each one method of :class:`MeteredCall`: :meth:`~MeteredCall.cache_hit`,
:meth:`~MeteredCall.succeeded` or :meth:`~MeteredCall.failed`. The writes are group-committed: queued and
written together ``record_delay`` seconds later (``flush()`` waits for them), unless ``wait_for_records``
makes each call wait for its own. The reservation, held until the write lands, keeps budgets safe meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ModelError, PriceUnknown
from ..store import Conn, Database
from .cache import ResponseCache
from .calibration import InputCalibration
from .call_log import CallRecord, insert_record
from .config import ModelsConfig
from .credit import CreditLeases, Hold
from .ledger import BudgetAlert, Ledger, from_nusd, to_nusd
from .prices import Price
from .routing import Deployment, Route
from .types import ModelResponse, Usage

__all__ = ["CallContext", "CallMeter", "MeterSettings", "MeteredCall", "Priced"]

log = logging.getLogger("crewline.models")

_Write = Callable[[Conn], list[BudgetAlert]]


@dataclass(frozen=True)
class CallContext:
    """Who is asking: budget scope and the run/step that made the call (for the record)."""

    requested: str
    scope: Mapping[str, str] = field(default_factory=dict)
    run_id: str | None = None
    step: int | None = None


@dataclass(slots=True)
class Priced:
    """What a call cost in USD; ``known`` is False when no price was known (never read as $0)."""

    cost: float
    known: bool


@dataclass(frozen=True)
class MeterSettings:
    """What the meter works with; ``price_of`` is the gateway's price of a deployment."""

    config: ModelsConfig
    price_of: Callable[[Deployment], Price | None]
    db: Database | None = None
    ledger: Ledger | None = None
    cache: ResponseCache | None = None
    clock: Callable[[], float] = time.time
    on_call: Callable[[CallRecord], None] | None = None
    wait_for_records: bool = False
    record_delay: float = 0.05


@dataclass(slots=True)
class _End:
    """How a call ended, as its record, the ledger and the cache need it."""

    usage: Usage | None = None
    priced: Priced | None = None
    error: BaseException | None = None
    response: Any = None
    cache_put: tuple[str, ModelResponse] | None = None
    cache_hit_key: str | None = None
    ttft_ms: float | None = None
    maybe_billed: bool = False


class CallMeter:
    """Opens metered calls and group-commits what they come to."""

    def __init__(self, settings: MeterSettings) -> None:
        self.settings = settings
        self._pending: set[asyncio.Task[Any]] = set()
        self._queued: list[_Write] = []
        self._write_handle: asyncio.TimerHandle | None = None
        self._unpriced: set[str] = set()
        self.calibration = InputCalibration(settings.db)
        # Budget credit this process spends from without a write per call (see credit.py).
        self.credit = CreditLeases(settings.ledger, self.queue) if settings.ledger is not None else None

    def close(self) -> None:
        """Give back the budget credit this process leased (``flush`` then writes it)."""
        if self.credit is not None:
            self.credit.close()

    def open(self, ctx: CallContext, kind: str, request: Any) -> MeteredCall:
        """Start metering a call of ``kind`` (complete | stream | embed); ``request`` is its payload."""
        return MeteredCall(self, ctx, kind, request)

    def price(self, dep: Deployment, usage: Usage) -> Priced:
        price = self.settings.price_of(dep)
        if price is None:
            if dep.key not in self._unpriced:
                self._unpriced.add(dep.key)
                log.warning("no price known for %s: its calls are recorded with price_known=false", dep.key)
            return Priced(0.0, False)
        return Priced(price.cost(usage), True)

    def prices(self, route: Route, why: str) -> list[Price]:
        """The price of each deployment ``route`` may use; :class:`PriceUnknown` if one has none."""
        prices: list[Price] = []
        for dep in route.deployments:
            price = self.settings.price_of(dep)
            if price is None:
                raise PriceUnknown(
                    f"{route.name}: no known price for {dep.key} and {why}, so the call was refused: "
                    f'use a model with a price, or add [models.prices."{dep.key}"] with input and output '
                    "(USD per million tokens)"
                )
            prices.append(price)
        return prices

    def queue(self, write: _Write) -> None:
        """Queue a call's write for the next group commit (at once with ``wait_for_records``)."""
        self._queued.append(write)
        if self.settings.wait_for_records:
            self._spawn_write()
        elif self._write_handle is None:
            self._write_handle = asyncio.get_running_loop().call_later(
                self.settings.record_delay, self._spawn_write
            )

    async def settled(self) -> None:
        """With ``wait_for_records``, return only once the call's record and settlement are committed."""
        if self.settings.wait_for_records:
            await self.flush()

    async def flush(self) -> None:
        """Wait until every call record and budget settlement so far is committed."""
        while self._pending or self._queued:
            if self._write_handle is not None:
                self._write_handle.cancel()
            self._spawn_write()
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    def _spawn_write(self) -> None:
        """Write every queued record in one transaction (one commit for a burst of calls)."""
        self._write_handle = None
        batch, self._queued = self._queued, []
        if batch:
            task = asyncio.ensure_future(self._write(batch))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _write(self, batch: list[_Write]) -> None:
        db, ledger = self.settings.db, self.settings.ledger
        assert db is not None

        def write_all(conn: Conn) -> list[BudgetAlert]:
            return [alert for fn in batch for alert in fn(conn)]

        try:
            alerts = await db.write(write_all)
        except Exception:
            alerts = []  # one bad write must not take the others down: retry them one by one
            for fn in batch:
                try:
                    alerts += await db.write(fn)
                except Exception:
                    log.exception("could not record a model call")
        if ledger is not None and alerts:
            ledger.emit(alerts)


class MeteredCall:
    """One call on the books: its record, its reservation, and the one way it ended."""

    __slots__ = (
        "_ceiling_in",
        "_ctx",
        "_dep",
        "_hold",
        "_meter",
        "_reserved_in",
        "_scopes",
        "_settings",
        "record",
        "start",
    )

    def __init__(self, meter: CallMeter, ctx: CallContext, kind: str, request: Any) -> None:
        self._meter = meter
        self._settings = settings = meter.settings
        self._ctx = ctx
        self.start = time.perf_counter()
        self.record = CallRecord(
            requested=ctx.requested,
            kind=kind,
            started_at=settings.clock(),
            run_id=ctx.run_id,
            step=ctx.step,
            workflow=ctx.scope.get("workflow"),
            virtual_key=ctx.scope.get("key"),
            request=request if settings.config.record_payloads else None,
        )
        self._scopes: Mapping[str, int | None] = {}
        self._hold: Hold | None = None
        self._reserved_in: dict[str, int] = {}
        self._ceiling_in = 0
        self._dep: Deployment | None = None

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.start) * 1000

    async def reserve(self, route: Route, ceiling_in: int, tokens_out: int) -> None:
        """Hold the call's worst case against every budget in scope that has a limit: ``ceiling_in`` is
        :func:`~crewline.models.tokens.input_token_ceiling` of the request, scaled per deployment by what
        its model was seen to bill past it.

        Every deployment of the route must have a price then: a call that cannot be priced is refused
        rather than reserved at some guessed ceiling, because its real cost stays unknown after the call
        too, so a guess would either block honest calls or let the budget be overspent unseen. The fix is
        the operator's: a price under [models.prices].
        """
        meter, ledger = self._meter, self._settings.ledger
        if self._settings.config.strict_prices:
            meter.prices(route, "strict_prices is on")
        if ledger is None:
            return
        self._scopes = scopes = ledger.scopes(self._ctx.scope)
        if not await ledger.has_limit(scopes):
            return
        prices = meter.prices(route, "the call counts against a budget with a limit")
        calibration = meter.calibration
        await calibration.factors()
        self._ceiling_in = ceiling_in
        self._reserved_in = held = {d.key: calibration.tokens(d.key, ceiling_in) for d in route.deployments}
        worst = max(
            p.worst_case(held[d.key], tokens_out) for d, p in zip(route.deployments, prices, strict=True)
        )
        assert meter.credit is not None  # a meter with a ledger has credit
        self._hold = await meter.credit.hold(scopes, to_nusd(worst))

    def routed(self, dep: Deployment, attempts: int) -> None:
        """The deployment that answered, after ``attempts`` attempts."""
        self._dep = dep
        self.record.attempts = attempts

    def price(self, usage: Usage) -> Priced:
        """What ``usage`` costs at the price of the deployment that answered."""
        assert self._dep is not None, "price() comes after routed()"
        return self._meter.price(self._dep, usage)

    def cache_hit(self, reply: ModelResponse, key: str) -> None:
        """The call was answered from the cache: nothing reserved, nothing spent."""
        record = self.record
        record.cache_hit, record.attempts = True, 0
        record.provider, record.model, record.deployment = reply.provider, reply.model, reply.deployment
        self._end(_End(usage=reply.usage, response=reply, cache_hit_key=key))

    def succeeded(
        self,
        usage: Usage,
        priced: Priced,
        response: Any = None,
        *,
        ttft_ms: float | None = None,
        cache_key: str | None = None,
    ) -> None:
        """The call was answered; with ``cache_key``, ``response`` (a reply) goes into the cache too."""
        put = (cache_key, response) if cache_key is not None else None
        self._end(_End(usage, priced, None, response, put, ttft_ms=ttft_ms))

    def failed(
        self, error: BaseException, *, ttft_ms: float | None = None, maybe_billed: bool = False
    ) -> None:
        """The call failed; ``maybe_billed`` when the provider may have done (and billed) the work."""
        if self._dep is None:
            self.record.attempts = error.tries if isinstance(error, ModelError) else 1
        self._end(_End(error=error, ttft_ms=ttft_ms, maybe_billed=maybe_billed))

    async def settled(self) -> None:
        await self._meter.settled()

    def _end(self, end: _End) -> None:
        """Settle the budget, record the call and update the cache in one write (awaited or not)."""
        self._fill(end)
        settings, record, hold = self._settings, self.record, self._hold
        if settings.on_call is not None:
            try:
                settings.on_call(record)
            except Exception:  # an observer's bug must not fail the call it observes
                log.exception("on_call observer failed")
        if settings.db is None:
            return
        credit, cache, cfg = self._meter.credit, settings.cache, settings.config
        limits = dict(self._scopes)
        cost = to_nusd(record.cost)
        miss = self._miss(end)
        when = settings.clock()

        def write(conn: Conn) -> list[BudgetAlert]:
            alerts: list[BudgetAlert] = []
            if miss is not None:
                InputCalibration.record_in(conn, miss[0], miss[1], when)
            if credit is not None and (hold is not None or cost):
                alerts = credit.settle_in(conn, hold, cost, limits)
            insert_record(conn, record, cfg.payload_threshold, cfg.record_payloads)
            if cache is not None and end.cache_put is not None:
                cache.put_in(conn, *end.cache_put)
            if cache is not None and end.cache_hit_key is not None:
                cache.hit_in(conn, end.cache_hit_key)
            return alerts

        self._meter.queue(write)
        if credit is not None:
            credit.ended(hold, cost)

    def _miss(self, end: _End) -> tuple[str, float] | None:
        """The model and its new factor when the call billed more input than its reservation held."""
        dep, usage = self._dep, end.usage
        if dep is None or usage is None or dep.key not in self._reserved_in:
            return None
        reserved = self._reserved_in[dep.key]
        factor = self._meter.calibration.missed(dep.key, self._ceiling_in, reserved, usage.input_tokens)
        return None if factor is None else (dep.key, factor)

    def _fill(self, end: _End) -> None:
        """Complete the record with what the call came to."""
        record, dep, priced = self.record, self._dep, end.priced
        record.latency_ms = self.elapsed_ms()
        record.ttft_ms = end.ttft_ms
        if dep is not None:
            record.provider, record.model, record.deployment = dep.provider, dep.model, dep.name
        if end.usage is not None:
            record.usage = end.usage
        if end.maybe_billed and priced is None:
            # Real usage unknown: keep the worst case reserved (or flag the cost unknown), never count $0.
            held = self._hold
            priced = Priced(from_nusd(held.amount), True) if held else Priced(0.0, False)
        if priced is not None:
            record.cost, record.price_known = priced.cost, priced.known
        if end.error is not None:
            record.status, record.error_class = "error", type(end.error).__name__
            record.error_message = str(end.error)
        if self._settings.config.record_payloads and end.response is not None:
            record.response = end.response
