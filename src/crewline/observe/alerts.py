"""Alert evaluation and delivery: rules become episodes, episodes become notices, notices reach people.

Every worker runs :meth:`Alerting.run`, yet each rule is evaluated once per interval across all of them:
a rule is evaluated inside one write transaction that first takes the rule's lock (an advisory lock on
PostgreSQL; SQLite's writes are serial anyway), then reads the rule's ``alert_state`` row and goes on
only if the rule is due, moving its due time on before committing. An episode start (breached, and the
cooldown since the last start has passed) and its end each append to ``alert_history`` and put one
notice per channel in ``alert_outbox``, in that same transaction, so a notice exists exactly once.

Delivery is apart from evaluation: due notices are leased to one process (the dialect's claim lock:
other processes skip them), sent, and settled; a channel that fails is retried with exponential backoff until the
notice is older than ``retry_window``, then given up and logged. Nothing here blocks a run or a model
call: budget crossings, which the ledger reports from inside the gateway, are only queued as a write.

This module owns ``alert_state``, ``alert_history`` and ``alert_outbox``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Literal

from ..errors import ChannelError, ConfigError, DatabaseUnavailable
from ..models.ledger import BudgetAlert
from ..store import Conn, Database
from ..store.dialects import CLAIM
from .alert_config import AlertsConfig, ChannelConfig, Rule
from .alert_measures import measure
from .channels import Notice, send
from .events import AlertEvent, Observers

if TYPE_CHECKING:
    import httpx

__all__ = ["Alerting", "HistoryEntry", "list_history"]

log = logging.getLogger("crewline.alerts")
DELIVERY_LEASE = 60.0  # longer than any one send (SMTP timeout included)
MAX_BACKOFF = 300.0
BACKOFF_BASE = 1.0


@dataclass(frozen=True)
class HistoryEntry:
    id: int
    rule: str
    state: str
    at: float
    summary: str
    value: float | None
    threshold: float | None
    link: str | None
    delivered: int  # notices delivered
    pending: int  # notices still being retried
    failed: int  # notices given up


@dataclass(frozen=True)
class _Due:
    id: int
    channel: str
    attempts: int
    created_at: float
    notice: Notice


# -- storage -----------------------------------------------------------------------------------------


def _append(conn: Conn, notice: Notice, channels: Sequence[str], dedupe: str | None = None) -> bool:
    """Record ``notice`` in the history and queue it for ``channels``; False if ``dedupe`` was seen."""
    row = conn.one(
        "INSERT INTO alert_history (rule, state, at, summary, value, threshold, link, dedupe) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING id",
        (
            notice.rule,
            notice.state,
            notice.at,
            notice.summary,
            notice.value,
            notice.threshold,
            notice.link,
            dedupe,
        ),
    )
    if row is None:
        return False
    for channel in dict.fromkeys(channels):
        conn.execute(
            "INSERT INTO alert_outbox (history_id, channel, state, attempts, next_at, created_at) "
            "VALUES (?, ?, 'pending', 0, ?, ?)",
            (row[0], channel, notice.at, notice.at),
        )
    return True


def _claim_due(conn: Conn, now: float, limit: int = 20) -> list[_Due]:
    rows = conn.all(
        "SELECT id, history_id, channel, attempts, created_at FROM alert_outbox "
        "WHERE state = 'pending' AND next_at <= ? ORDER BY next_at, id LIMIT ?"
        + conn.dialect.lock_rows_suffix(CLAIM),
        (now, limit),
    )
    due = []
    for oid, history_id, channel, attempts, created_at in rows:
        conn.execute("UPDATE alert_outbox SET next_at = ? WHERE id = ?", (now + DELIVERY_LEASE, oid))
        h = conn.one(
            "SELECT rule, state, at, summary, value, threshold, link FROM alert_history WHERE id = ?",
            (history_id,),
        )
        assert h is not None
        notice = Notice(h[0], h[1], h[3], float(h[2]), h[4], h[5], h[6])
        due.append(_Due(int(oid), channel, int(attempts), float(created_at), notice))
    return due


def _settle(conn: Conn, due: _Due, error: str | None, now: float, retry_window: float) -> str:
    attempts = due.attempts + 1
    if error is None:
        state, next_at = "sent", now
    elif now - due.created_at >= retry_window:
        state, next_at = "failed", now
    else:
        state, next_at = "pending", now + min(MAX_BACKOFF, BACKOFF_BASE * 2 ** (attempts - 1))
    conn.execute(
        "UPDATE alert_outbox SET state = ?, attempts = ?, next_at = ?, last_error = ? WHERE id = ?",
        (state, attempts, next_at, error, due.id),
    )
    return state


def list_history(conn: Conn, *, rule: str | None = None, limit: int = 50) -> list[HistoryEntry]:
    """Episode starts, ends and budget crossings, newest first, with how their notices fared."""
    where, params = ("WHERE h.rule = ?", [rule]) if rule else ("", [])
    rows = conn.all(
        "SELECT h.id, h.rule, h.state, h.at, h.summary, h.value, h.threshold, h.link, "
        "COALESCE(SUM(CASE WHEN o.state = 'sent' THEN 1 ELSE 0 END), 0), "
        "COALESCE(SUM(CASE WHEN o.state = 'pending' THEN 1 ELSE 0 END), 0), "
        "COALESCE(SUM(CASE WHEN o.state = 'failed' THEN 1 ELSE 0 END), 0) "
        f"FROM alert_history h LEFT JOIN alert_outbox o ON o.history_id = h.id {where} "
        "GROUP BY h.id, h.rule, h.state, h.at, h.summary, h.value, h.threshold, h.link "
        "ORDER BY h.at DESC, h.id DESC LIMIT ?",
        (*params, limit),
    )
    return [
        HistoryEntry(
            int(r[0]), r[1], r[2], float(r[3]), r[4], r[5], r[6], r[7], int(r[8]), int(r[9]), int(r[10])
        )
        for r in rows
    ]


def rule_states(conn: Conn) -> dict[str, tuple[bool, float | None, float | None]]:
    """Each evaluated rule's (firing, since, last value)."""
    rows = conn.all("SELECT rule, firing, since, value FROM alert_state")
    return {r[0]: (bool(r[1]), r[2], r[3]) for r in rows}


# -- evaluation --------------------------------------------------------------------------------------


class Alerting:
    """The alert rules and channels of one app, evaluated and delivered by its workers."""

    def __init__(
        self,
        db: Database,
        config: AlertsConfig,
        *,
        public_url: str | None = None,
        observers: Observers | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.config = config
        self.public_url = public_url.rstrip("/") if public_url else None
        self.observers = observers
        self._clock = clock
        self._writes: set[asyncio.Task[None]] = set()
        # When each rule is next due, as last read: spares a write per rule per tick in between.
        self._next_due: dict[str, float] = {}

    def link(self, path: str) -> str:
        return f"{self.public_url}{path}" if self.public_url else path

    # -- budgets: told by the ledger, not measured

    def on_budget(self, alert: BudgetAlert) -> None:
        """The gateway's ``on_alert``: persist the crossing and queue its notices, without waiting."""
        task = asyncio.get_running_loop().create_task(self.record_budget(alert))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def record_budget(self, alert: BudgetAlert) -> None:
        now = self._clock()
        rules = [
            r
            for r in self.config.rules.values()
            if r.what == "budget" and alert.level >= r.threshold and alert.scope.startswith(r.scope or "")
        ]
        summary = (
            f"budget {alert.scope} reached {alert.level}% of its ${alert.limit:.4f} limit "
            f"(spent ${alert.spent:.4f})"
        )
        notices = [
            Notice(r.name, "firing", summary, now, alert.spent, alert.limit, self.link("/api/v1/budgets"))
            for r in rules
        ] or [
            Notice("budget", "firing", summary, now, alert.spent, alert.limit, self.link("/api/v1/budgets"))
        ]

        def write(conn: Conn) -> list[Notice]:
            channels = {r.name: r.channels for r in rules}
            key = f"{alert.scope}:{alert.level}"
            return [
                n for n in notices if _append(conn, n, channels.get(n.rule, ()), f"budget:{n.rule}:{key}")
            ]

        try:
            for notice in await self.db.write(write):
                self._emit(notice)
        except Exception:  # the call that crossed it must not notice; the ledger logged the crossing
            log.exception("could not record budget crossing %s at %d%%", alert.scope, alert.level)

    # -- measured rules

    async def evaluate(self) -> list[Notice]:
        """Evaluate every due rule (each in its own transaction); the episode changes this process made."""
        changes = []
        for rule in self.config.rules.values():
            if rule.what == "budget" or self._next_due.get(rule.name, 0.0) > self._clock():
                continue
            notice, self._next_due[rule.name] = await self.db.write(partial(self._evaluate_in, rule=rule))
            if notice is not None:
                changes.append(notice)
                self._emit(notice)
        return changes

    def _evaluate_in(self, conn: Conn, rule: Rule) -> tuple[Notice | None, float]:
        now = self._clock()
        conn.lock_key(f"crewline-alert:{rule.name}")
        conn.execute(
            "INSERT INTO alert_state (rule, firing, next_eval_at, created_at) VALUES (?, 0, ?, ?) "
            "ON CONFLICT (rule) DO NOTHING",
            (rule.name, now, now),
        )
        row = conn.one(
            "SELECT firing, last_fired_at, next_eval_at FROM alert_state WHERE rule = ?", (rule.name,)
        )
        assert row is not None
        if float(row[2]) > now:
            return None, float(row[2])  # evaluated this interval, maybe by another process
        m = measure(conn, rule, now)
        assert m is not None
        was_firing, last_fired = bool(row[0]), row[1]
        state = None
        if m.breached and not was_firing and (last_fired is None or now - float(last_fired) >= rule.cooldown):
            state = "firing"
        elif not m.breached and was_firing:
            state = "resolved"
        firing = int(state == "firing" or (was_firing and state is None))
        conn.execute(
            "UPDATE alert_state SET firing = ?, value = ?, next_eval_at = ?, "
            "since = CASE WHEN ? THEN ? ELSE since END, last_fired_at = CASE WHEN ? THEN ? ELSE last_fired_at END "
            "WHERE rule = ?",
            (
                firing,
                m.value,
                now + self.config.interval,
                state is not None,
                now,
                state == "firing",
                now,
                rule.name,
            ),
        )
        next_due = now + self.config.interval
        if state is None:
            return None, next_due
        notice = Notice(rule.name, state, m.summary, now, m.value, rule.threshold, self.link(m.path))
        _append(conn, notice, rule.channels)
        return notice, next_due

    def _emit(self, notice: Notice) -> None:
        if self.observers and notice.state in ("firing", "resolved"):
            state: Literal["firing", "resolved"] = "firing" if notice.state == "firing" else "resolved"
            self.observers.emit(
                AlertEvent(notice.rule, state, notice.at, notice.summary, notice.value, notice.threshold)
            )

    # -- delivery

    async def deliver(self, client: httpx.AsyncClient) -> int:
        """Send the notices that are due; returns how many were delivered."""
        due = await self.db.write(lambda conn: _claim_due(conn, self._clock()))
        results = await asyncio.gather(*(self._deliver_one(client, d) for d in due))
        return sum(results)

    async def _deliver_one(self, client: httpx.AsyncClient, due: _Due) -> bool:
        channel = self.config.channels.get(due.channel)
        error = None
        if channel is None:
            error = f"channel {due.channel!r} is no longer configured"
        else:
            try:
                await send(channel, due.notice, client)
            except ChannelError as e:
                error = str(e)
        window = self.config.retry_window
        state = await self.db.write(lambda conn: _settle(conn, due, error, self._clock(), window))
        if error is not None:
            outcome = "giving up after the retry window" if state == "failed" else "will retry"
            log.warning(
                "alert notice %d (rule %s) via channel %s failed: %s; %s",
                *(due.id, due.notice.rule, due.channel, error, outcome),
            )
        return error is None

    async def test(self, name: str, client: httpx.AsyncClient) -> None:
        """Send a sample notice through channel ``name`` now; raises :class:`ChannelError`."""
        channel: ChannelConfig | None = self.config.channels.get(name)
        if channel is None:
            known = ", ".join(sorted(self.config.channels)) or "none configured"
            raise ConfigError(f"no channel {name!r} under [alerts.channels] (channels: {known})")
        summary = "a test notice from `crewline alerts test`: this channel reaches you"
        notice = Notice("test", "test", summary, self._clock(), link=self.link("/api/v1/runs"))
        try:
            await send(channel, notice, client)
        except ChannelError as e:
            raise ChannelError(f"channel {name!r}: {e}") from None

    # -- the loop each worker runs

    async def run(self, stopping: asyncio.Event) -> None:
        """Evaluate and deliver until ``stopping`` is set; a failure is logged and retried next tick."""
        if not self.config.rules:
            return
        tick = min(self.config.interval, 1.0)
        import httpx  # only workers with alert rules need it

        async with httpx.AsyncClient(timeout=10.0, follow_redirects=False) as client:
            while not stopping.is_set():
                try:
                    await self.evaluate()
                    await self.deliver(client)
                except DatabaseUnavailable as e:
                    log.warning("alerts: cannot reach the database: %s", e)
                except Exception:
                    log.exception("alerts: evaluation failed")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), tick)
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)
