"""Budget credit leased to this process, so that a budgeted call holds its worst case without a write.

A reservation per call is a committed write (an fsync) before the call may go upstream, on the hot path
of every budgeted proxy call. Instead, this process leases a slice of the budgets a call counts against —
a reservation of :data:`LEASE_CALLS` times the call's worst case, in one ledger write — and each call
holds its worst case from that slice in memory. As a call ends, its real cost moves from the lease to
what was spent in the call's own record write (already group-committed), and what it held beyond that
returns to the slice. In the database a lease is an ordinary reservation, so what :meth:`Ledger.reserve_in
<crewline.models.ledger.Ledger.reserve_in>` guarantees still holds across processes: the leases plus what
was spent never exceed a limit, and a budget cannot be overspent however many processes spend from it.

No call waits for a lease while its process keeps spending: once a lease is half spent, the next one is
taken in the background, sized to what this process spent over the last :data:`LEASE_SECONDS` (at least
:data:`LEASE_CALLS` worst cases, at most :data:`MAX_LEASE_CALLS`), so the ledger write has about a second
to land before the current lease runs dry. Only the first call of a set of scopes, or the first after its
lease went back idle, waits for a lease write.

The trade-off: credit leased here is held from every other process. Near its end a budget may refuse a
call in one process while credit sits idle in another's lease (at most :data:`MAX_LEASE_CALLS` worst
cases, and never more than :data:`LEASE_SHARE` of what was left, per process and set of scopes). To keep
that small and short:

- a lease is taken only while it is at most :data:`LEASE_SHARE` of what is left of each budget (a lease
  sized to the spend rate that does not fit falls back to :data:`LEASE_CALLS` worst cases); past that
  (near a budget's end, or a budget small beside its calls) calls reserve one by one, exactly as without
  leases, so the last of a budget is still spent, call by call;
- a lease unused for :data:`IDLE_SECONDS` is returned, and so is every lease at shutdown
  (:meth:`CreditLeases.close`, from ``Gateway.aclose``);
- a process that crashes leaves its lease behind as a reservation, which the workers' upkeep counts as
  spent once stale (``expire_reservations``), as it does a crashed call's: its calls may have been billed.

Calls with a run in scope reserve one by one, as before: a run's budget is its own and ends with it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ..errors import BudgetExceeded
from ..store import Conn
from .ledger import BudgetAlert, Ledger, Reservation

__all__ = [
    "IDLE_SECONDS",
    "LEASE_CALLS",
    "LEASE_SECONDS",
    "LEASE_SHARE",
    "MAX_LEASE_CALLS",
    "CreditLeases",
    "Hold",
]

# How many worst cases of the call that asks for it a lease holds at least (the first lease: no rate yet).
LEASE_CALLS = 32
# A lease after the first holds what the last one was spent at for this long (from half spent, the next
# one is taken, so its write has half of this to land)...
LEASE_SECONDS = 2.0
# ... up to this many worst cases of the call that asks for it.
MAX_LEASE_CALLS = 32 * LEASE_CALLS
# A lease is taken only while it is at most this share of what is left of every budget it holds from.
LEASE_SHARE = 1 / 8
# A lease nobody used for this long goes back to the budget. Longer than a lull between bursts of calls,
# whose first call would otherwise wait for a new lease.
IDLE_SECONDS = 30.0
# After a slice was refused (the budget nearly spent), calls reserve one by one for this long.
REFUSED_SECONDS = 1.0


class _Lease:
    __slots__ = ("available", "inflight", "reservation", "taken_at", "used_at", "watched")

    def __init__(self, reservation: Reservation, now: float) -> None:
        self.reservation = reservation
        self.available = reservation.amount  # nano-USD not held by a call in flight nor spent
        self.inflight = 0
        self.taken_at = self.used_at = now
        self.watched = False  # an idle check is scheduled


@dataclass(frozen=True)
class Hold:
    """What a call holds against its budgets: a part of a lease, or a reservation of its own."""

    amount: int  # nano-USD
    reservation: Reservation | None = None
    lease: _Lease | None = None


class CreditLeases:
    """This process's leases, one per set of budget scopes; ``queue`` takes a write for the next commit,
    ``clock`` is monotonic seconds."""

    def __init__(
        self,
        ledger: Ledger,
        queue: Callable[[Callable[[Conn], list[BudgetAlert]]], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ledger = ledger
        self._queue = queue
        self._clock = clock
        self._current: dict[tuple[str, ...], _Lease] = {}
        self._leasing: dict[tuple[str, ...], asyncio.Future[_Lease | None]] = {}
        self._refused_at: dict[tuple[str, ...], float] = {}

    async def hold(self, scopes: Mapping[str, int | None], amount: int) -> Hold:
        """Hold ``amount`` against every scope (raises :class:`BudgetExceeded` when it does not fit)."""
        key = tuple(sorted(scopes))
        if any(scope.startswith("run:") for scope in key):
            return Hold(amount, await self._ledger.reserve(scopes, amount))
        lease = self._current.get(key)
        if lease is None or lease.available < amount:
            lease = await self._renew(key, scopes, amount)
        elif lease.available - amount < lease.reservation.amount // 2 and key not in self._leasing:
            self._start_lease(key, scopes, amount)  # the next slice arrives before this one runs out
        if lease is None or lease.available < amount:
            return Hold(amount, await self._ledger.reserve(scopes, amount))
        lease.available -= amount
        lease.inflight += 1
        lease.used_at = self._clock()
        return Hold(amount, lease=lease)

    def settle_in(
        self, conn: Conn, hold: Hold | None, cost: int, limits: Mapping[str, int | None]
    ) -> list[BudgetAlert]:
        """Inside the call's record write: add ``cost`` to what was spent, out of what ``hold`` held."""
        lease_id = hold.lease.reservation.id if hold is not None and hold.lease is not None else None
        reservation = hold.reservation if hold is not None else None
        return self._ledger.settle_in(conn, reservation, list(limits), cost, limits, lease_id=lease_id)

    def ended(self, hold: Hold | None, cost: int) -> None:
        """The call ended costing ``cost`` (its write queued): what it held beyond that is free again."""
        if hold is None or hold.lease is None:
            return
        lease = hold.lease
        lease.available += hold.amount - cost
        lease.inflight -= 1
        lease.used_at = self._clock()
        if lease.inflight == 0:
            if lease not in self._current.values():
                self._give_back(lease)
            elif not lease.watched:
                lease.watched = True
                asyncio.get_running_loop().call_later(IDLE_SECONDS, self._idle, lease)

    def close(self) -> None:
        """Give every lease back (calls still in flight give theirs back as they end)."""
        leases, self._current = list(self._current.values()), {}
        for lease in leases:
            if lease.inflight == 0:
                self._give_back(lease)

    async def _renew(
        self, key: tuple[str, ...], scopes: Mapping[str, int | None], amount: int
    ) -> _Lease | None:
        if key not in self._leasing:
            if self._clock() - self._refused_at.get(key, -REFUSED_SECONDS) < REFUSED_SECONDS:
                return None
            self._start_lease(key, scopes, amount)
        return await asyncio.shield(self._leasing[key])

    def _start_lease(self, key: tuple[str, ...], scopes: Mapping[str, int | None], amount: int) -> None:
        sizes = sorted({amount * LEASE_CALLS, self._rate_size(key, amount)}, reverse=True)
        self._leasing[key] = asyncio.ensure_future(self._lease(key, dict(scopes), sizes))

    def _rate_size(self, key: tuple[str, ...], amount: int) -> int:
        """Credit for :data:`LEASE_SECONDS` at the rate the current lease is being spent (held included)."""
        lease = self._current.get(key)
        if lease is None:
            return amount * LEASE_CALLS
        seconds = max(self._clock() - lease.taken_at, 0.1)  # a burst's rate is not a rate
        rate = (lease.reservation.amount - lease.available) / seconds
        return max(amount * LEASE_CALLS, min(round(rate * LEASE_SECONDS), amount * MAX_LEASE_CALLS))

    async def _lease(
        self, key: tuple[str, ...], scopes: dict[str, int | None], sizes: list[int]
    ) -> _Lease | None:
        """A lease of the first of ``sizes`` that fits within :data:`LEASE_SHARE` of every budget."""
        try:
            for size in sizes:
                try:
                    headroom = round(size / LEASE_SHARE) - size
                    lease = _Lease(await self._ledger.reserve(scopes, size, headroom), self._clock())
                    break
                except BudgetExceeded:
                    continue
            else:
                self._refused_at[key] = self._clock()
                return None
        finally:
            del self._leasing[key]
        old = self._current.get(key)
        self._current[key] = lease
        if old is not None and old.inflight == 0:
            self._give_back(old)
        return lease

    def _idle(self, lease: _Lease) -> None:
        lease.watched = False
        if lease.inflight or lease not in self._current.values():
            return  # in use: the call that ends last looks again; replaced: given back as it drains
        unused = self._clock() - lease.used_at
        if unused < IDLE_SECONDS:
            lease.watched = True
            asyncio.get_running_loop().call_later(IDLE_SECONDS - unused, self._idle, lease)
            return
        for key, current in list(self._current.items()):
            if current is lease:
                del self._current[key]
        self._give_back(lease)

    def _give_back(self, lease: _Lease) -> None:
        """Return what the lease holds, after the writes that settle its calls (queued before)."""
        reservation_id = lease.reservation.id
        lease.available = 0
        ledger = self._ledger

        def give_back(conn: Conn) -> list[BudgetAlert]:
            ledger.release_in(conn, reservation_id)
            return []

        self._queue(give_back)
