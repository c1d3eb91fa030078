"""The budget ledger: reserve a call's worst case before it runs, settle its real cost after.

One row per budget scope in ``model_budgets`` (``day:2026-11-24``, ``month:2026-11``, ``workflow:triage``,
``key:alice``, ``run:<id>``) keeps what was spent and what is reserved, in integer nano-dollars so sums
never drift. A reservation checks and bumps every scope of the call in one transaction: on SQLite the
write lock serialises it, on PostgreSQL an advisory lock per scope (taken in sorted order, so never a
deadlock) does, so concurrent callers in any number of processes cannot overspend. Settling releases the
reservation and adds the real cost; crossing 50/80/100% of a limit raises an alert once per scope.
A process's lease of budget credit (:mod:`.credit`) is a reservation like any other, which its calls
settle from one by one and which is released when no longer needed.
This module alone issues SQL on ``model_budgets`` and ``model_reservations``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..errors import BudgetExceeded, InvalidInput
from ..store import Conn, Database
from .config import BudgetConfig

__all__ = ["ALERT_LEVELS", "BudgetAlert", "Ledger", "Reservation", "config_limit", "from_nusd", "to_nusd"]

log = logging.getLogger("crewline.models.budget")
NANO = 1_000_000_000
ALERT_LEVELS = (50, 80, 100)
_SCOPE_KINDS = ("workflow", "key", "run")


def to_nusd(usd: float) -> int:
    return round(usd * NANO)


def from_nusd(n: int | None) -> float:
    return (n or 0) / NANO


@dataclass(frozen=True)
class Reservation:
    id: str
    scopes: tuple[str, ...]
    amount: int  # nano-USD


@dataclass(frozen=True)
class BudgetAlert:
    scope: str
    level: int  # percent of the limit crossed
    limit: float
    spent: float


class Ledger:
    def __init__(
        self,
        db: Database,
        budgets: BudgetConfig,
        clock: Callable[[], float] = time.time,
        on_alert: Callable[[BudgetAlert], None] | None = None,
    ) -> None:
        self.db = db
        self.budgets = budgets
        self._clock = clock
        self._on_alert = on_alert
        self._stored_limits: set[str] = set()
        self._set_here: set[str] = set()
        self._calendar: tuple[int, str, str] | None = (
            None  # limits set by this process: known without a re-read
        )
        self._stored_read_at = float("-inf")
        self._reading: asyncio.Future[None] | None = None

    # -- scopes -----------------------------------------------------------------------------------------

    def scopes(self, scope: Mapping[str, str] | None) -> dict[str, int | None]:
        """Budget keys a call counts against, with the configured limit of each (nano-USD or ``None``)."""
        b = self.budgets
        day, month = self._calendar_keys()
        out: dict[str, int | None] = {day: _n(b.day), month: _n(b.month)}
        for kind, value in (scope or {}).items():
            if kind not in _SCOPE_KINDS:
                raise InvalidInput(f"budget_scope key {kind!r} is not one of {', '.join(_SCOPE_KINDS)}")
            if not isinstance(value, str) or not value:
                raise InvalidInput(f"budget_scope[{kind!r}] must be a non-empty string, got {value!r}")
            limits = {"workflow": b.workflow.get(value), "key": b.key.get(value), "run": b.run}
            out[f"{kind}:{value}"] = _n(limits[kind])
            if kind == "workflow":  # the workflow's spend today, which a daily budget limits
                out[self.workflow_day(value)] = None
        return out

    def workflow_day(self, workflow: str) -> str:
        """The scope key of ``workflow``'s spend on the current (UTC) day."""
        day, _ = self._calendar_keys()
        return f"workflow:{workflow}@{day.partition(':')[2]}"

    async def has_limit(self, scopes: Mapping[str, int | None]) -> bool:
        """Whether any of ``scopes`` has a limit, from config or stored (``set_limit``, any process).

        Stored limits set in this process count at once; those set by other processes are re-read every
        couple of seconds, so a call without any limit in scope costs no reservation write. Only the first
        call waits for that read; later ones go on with what the last read found while the next is made.
        """
        if any(limit is not None for limit in scopes.values()):
            return True
        if time.monotonic() - self._stored_read_at > 2.0:
            if self._reading is None:
                self._reading = asyncio.ensure_future(self._read_stored_limits())
            if self._stored_read_at == float("-inf"):
                await asyncio.shield(self._reading)
        return any(s in self._stored_limits or s in self._set_here for s in scopes)

    async def _read_stored_limits(self) -> None:
        try:
            rows = await self.db.read(
                lambda conn: conn.all("SELECT scope FROM model_budgets WHERE limit_nusd IS NOT NULL")
            )
            self._stored_limits = {r[0] for r in rows}
            self._stored_read_at = time.monotonic()
        finally:
            self._reading = None

    async def warm(self) -> None:
        """Read the stored limits now, so that the first budgeted call does not wait for them."""
        await self.has_limit({})

    def _calendar_keys(self) -> tuple[str, str]:
        minute = int(self._clock() // 60)
        if self._calendar is None or self._calendar[0] != minute:
            now = datetime.fromtimestamp(minute * 60, UTC)
            self._calendar = (minute, f"day:{now:%Y-%m-%d}", f"month:{now:%Y-%m}")
        return self._calendar[1], self._calendar[2]

    # -- reserve / settle -------------------------------------------------------------------------------

    def reserve_in(
        self, conn: Conn, scopes: Mapping[str, int | None], amount: int, headroom: int = 0
    ) -> Reservation:
        """Check every limited scope has room for ``amount`` (and ``headroom`` more, which stays free) and
        hold it; raises :class:`BudgetExceeded`."""
        keys = sorted(scopes)
        now = self._clock()
        for key in keys:
            conn.lock_key(f"crewline-budget:{key}")
        for key in keys:
            # Hold first, check after, one statement per scope: a scope without room raises, and raising
            # rolls the whole transaction back, holds included.
            row = conn.one(
                "INSERT INTO model_budgets (scope, spent_nusd, reserved_nusd, updated_at) VALUES (?, 0, ?, ?) "
                "ON CONFLICT (scope) DO UPDATE SET reserved_nusd = model_budgets.reserved_nusd + ?, "
                "updated_at = excluded.updated_at RETURNING limit_nusd, spent_nusd, reserved_nusd",
                (key, amount, now, amount),
            )
            assert row is not None
            limit = row[0] if row[0] is not None else scopes[key]
            if limit is not None and row[1] + row[2] + headroom > limit:
                before = row[1] + row[2] - amount
                raise BudgetExceeded(key, from_nusd(limit), from_nusd(before), from_nusd(amount))
        res = Reservation(uuid.uuid4().hex, tuple(keys), amount)
        conn.execute(
            "INSERT INTO model_reservations (id, scopes, amount_nusd, created_at) VALUES (?, ?, ?, ?)",
            (res.id, json.dumps(res.scopes), amount, now),
        )
        return res

    async def reserve(self, scopes: Mapping[str, int | None], amount: int, headroom: int = 0) -> Reservation:
        return await self.db.write(lambda conn: self.reserve_in(conn, scopes, amount, headroom))

    def settle_in(
        self,
        conn: Conn,
        reservation: Reservation | None,
        scopes: Sequence[str],
        cost: int,
        limits: Mapping[str, int | None],
        *,
        lease_id: str | None = None,
    ) -> list[BudgetAlert]:
        """Release ``reservation`` (if any) and add ``cost`` to every scope; returns alerts crossed.

        With ``lease_id`` the call spent from a lease (a reservation shared by a process's calls, see
        :mod:`.credit`): ``cost`` moves from the lease to what was spent, and the lease counts as fresh."""
        now = self._clock()
        held = 0
        if reservation is not None:
            row = conn.one("SELECT amount_nusd FROM model_reservations WHERE id = ?", (reservation.id,))
            held = int(row[0]) if row is not None else 0
            conn.execute("DELETE FROM model_reservations WHERE id = ?", (reservation.id,))
        elif lease_id is not None:
            row = conn.one(
                "UPDATE model_reservations SET amount_nusd = amount_nusd - ?, created_at = ? WHERE id = ? "
                "RETURNING id",
                (cost, now, lease_id),
            )
            held = cost if row is not None else 0  # an expired lease was counted as spent already
        alerts: list[BudgetAlert] = []
        for key in sorted(scopes):
            row = conn.one(
                "INSERT INTO model_budgets (scope, spent_nusd, reserved_nusd, updated_at) VALUES (?, ?, 0, ?) "
                "ON CONFLICT (scope) DO UPDATE SET spent_nusd = model_budgets.spent_nusd + ?, "
                "reserved_nusd = model_budgets.reserved_nusd - ?, updated_at = excluded.updated_at "
                "RETURNING limit_nusd, spent_nusd, alerted",
                (key, cost, now, cost, held),
            )
            assert row is not None
            limit = row[0] if row[0] is not None else limits.get(key)
            if limit:
                alerts.extend(self._crossed(conn, key, int(limit), int(row[1]), int(row[2])))
        return alerts

    def release_in(self, conn: Conn, reservation_id: str) -> None:
        """Give back what a reservation still holds (a lease no longer needed) to every scope it holds."""
        row = conn.one("SELECT scopes, amount_nusd FROM model_reservations WHERE id = ?", (reservation_id,))
        if row is None:
            return  # expired meanwhile: counted as spent
        for key in json.loads(row[0]):
            conn.execute(
                "UPDATE model_budgets SET reserved_nusd = reserved_nusd - ?, updated_at = ? WHERE scope = ?",
                (row[1], self._clock(), key),
            )
        conn.execute("DELETE FROM model_reservations WHERE id = ?", (reservation_id,))

    def _crossed(self, conn: Conn, key: str, limit: int, spent: int, alerted: int) -> list[BudgetAlert]:
        level = max((lv for lv in ALERT_LEVELS if spent * 100 >= lv * limit), default=0)
        if level <= alerted:
            return []
        conn.execute(
            "UPDATE model_budgets SET alerted = ? WHERE scope = ? AND alerted < ?", (level, key, level)
        )
        return [BudgetAlert(key, level, from_nusd(limit), from_nusd(spent))]

    def emit(self, alerts: Sequence[BudgetAlert]) -> None:
        for alert in alerts:
            log.warning(
                "budget %s at %d%% of its $%.4f limit (spent $%.4f)",
                alert.scope,
                alert.level,
                alert.limit,
                alert.spent,
            )
            if self._on_alert is not None:
                self._on_alert(alert)

    # -- administration ---------------------------------------------------------------------------------

    def set_limit(self, scope: str, limit: float | None) -> None:
        """Set (or with ``None`` clear) a stored limit for ``scope``, overriding config."""
        if limit is not None and limit < 0:
            raise InvalidInput(f"budget limit for {scope!r} must be >= 0, got {limit}")
        self.db.run(
            lambda conn: conn.execute(
                "INSERT INTO model_budgets (scope, limit_nusd, spent_nusd, reserved_nusd, updated_at) VALUES (?, ?, 0, 0, ?) "
                "ON CONFLICT (scope) DO UPDATE SET limit_nusd = excluded.limit_nusd, updated_at = excluded.updated_at",
                (scope, None if limit is None else to_nusd(limit), self._clock()),
            )
        )
        if limit is None:
            self._set_here.discard(scope)
        else:
            self._set_here.add(scope)

    def status(self, scope: str) -> dict[str, float | None]:
        row = self.db.query(
            lambda conn: conn.one(
                "SELECT limit_nusd, spent_nusd, reserved_nusd FROM model_budgets WHERE scope = ?", (scope,)
            )
        )
        if row is None:
            return {"limit": None, "spent": 0.0, "reserved": 0.0}
        return {
            "limit": None if row[0] is None else from_nusd(row[0]),
            "spent": from_nusd(row[1]),
            "reserved": from_nusd(row[2]),
        }

    def expire_reservations(self, older_than: float) -> int:
        """Count reservations left by crashed callers as spent at their full amount; returns how many.

        A reservation outliving any plausible call means its process died between reserving and settling;
        its real cost is unknown, so the worst case it reserved is what the budget keeps.
        """
        cutoff = self._clock() - older_than

        def expire(conn: Conn) -> int:
            rows = conn.all(
                "SELECT id, scopes, amount_nusd FROM model_reservations WHERE created_at < ?", (cutoff,)
            )
            for rid, scopes, amount in rows:
                for key in json.loads(scopes):
                    conn.execute(
                        "UPDATE model_budgets SET reserved_nusd = reserved_nusd - ?, spent_nusd = spent_nusd + ? "
                        "WHERE scope = ?",
                        (amount, amount, key),
                    )
                conn.execute("DELETE FROM model_reservations WHERE id = ?", (rid,))
            return len(rows)

        return self.db.run(expire)


def budget_rows(conn: Conn) -> list[tuple[Any, ...]]:
    """(scope, limit, spent, reserved) in nano-dollars for every budget scope seen, by scope."""
    return conn.all("SELECT scope, limit_nusd, spent_nusd, reserved_nusd FROM model_budgets ORDER BY scope")


def config_limit(budgets: BudgetConfig, scope: str) -> float | None:
    """The limit config gives a scope key such as ``day:2026-11-24`` or ``workflow:triage``."""
    kind, _, name = scope.partition(":")
    fixed = {"day": budgets.day, "month": budgets.month, "run": budgets.run}
    if kind in fixed:
        return fixed[kind]
    return {"workflow": budgets.workflow, "key": budgets.key}.get(kind, {}).get(name)


def _n(usd: float | None) -> int | None:
    return None if usd is None else to_nusd(usd)
