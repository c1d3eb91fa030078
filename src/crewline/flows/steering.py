"""What an operator switches while runs go on: pause and resume runs, workflows and queues; disable and
enable workflows; set the flags workflows read. The CLI and the API both call these, so they cannot differ.

A paused run holds no lease and no worker slot; a running one pauses at its next step boundary, as a
cancellation does. Pausing a workflow or queue pauses its unfinished runs and keeps its new runs waiting
until it is resumed; resuming it resumes what it paused, not runs an operator paused one by one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from ..errors import InvalidInput
from ..store.database import Conn
from .run_store import PauseResult, pause_run, pause_runs_of, resume_runs_of, unpause_run
from .switches import (
    Flag,
    Scope,
    Switch,
    check_flag_name,
    delete_flag,
    get_flag,
    list_flags,
    list_switches,
    set_flag,
    set_switch,
)

if TYPE_CHECKING:
    from .engine import Engine

__all__ = ["Steering", "SwitchResult"]


@dataclass(frozen=True)
class SwitchResult:
    """What switching a workflow or queue did: whether the switch changed, how many runs it touched."""

    scope: Scope
    name: str
    action: str
    changed: bool
    runs: int
    runs_were: Literal["paused", "resumed"]

    def message(self) -> str:
        state = self.action if self.changed else f"already {self.action}"
        return f"{self.scope} {self.name} {state}; {self.runs} run(s) {self.runs_were}"

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Steering:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    async def pause(self, run_id: str) -> PauseResult:
        """Pause a run: "paused", "pause requested" (it is executing) or "already paused"."""
        return await self._engine.db.write(lambda conn: pause_run(conn, run_id))

    async def resume(self, run_id: str) -> PauseResult:
        """Resume a paused run (or withdraw a pause it has not reached yet)."""
        result = await self._engine.db.write(lambda conn: unpause_run(conn, run_id))
        self._engine.work_available.set()
        return result

    async def pause_all(self, scope: Scope, name: str) -> SwitchResult:
        """Pause a workflow or queue: its unfinished runs, and the runs it gets until resumed."""
        self._check_known(scope, name)

        def write(conn: Conn) -> SwitchResult:
            changed = set_switch(conn, scope, name, "paused", True)
            return SwitchResult(scope, name, "paused", changed, pause_runs_of(conn, scope, name), "paused")

        return await self._engine.db.write(write)

    async def resume_all(self, scope: Scope, name: str) -> SwitchResult:
        self._check_known(scope, name)

        def write(conn: Conn) -> SwitchResult:
            changed = set_switch(conn, scope, name, "paused", False)
            return SwitchResult(scope, name, "resumed", changed, resume_runs_of(conn, scope, name), "resumed")

        result = await self._engine.db.write(write)
        self._engine.work_available.set()
        return result

    async def disable(self, workflow: str, *, pause_running: bool = False) -> SwitchResult:
        """No run of ``workflow`` starts until it is enabled; with ``pause_running`` its runs pause too,
        else they finish."""
        self._check_known("workflow", workflow)

        def write(conn: Conn) -> SwitchResult:
            changed = set_switch(conn, "workflow", workflow, "disabled", True)
            paused = 0
            if pause_running:
                set_switch(conn, "workflow", workflow, "paused", True)
                paused = pause_runs_of(conn, "workflow", workflow)
            return SwitchResult("workflow", workflow, "disabled", changed, paused, "paused")

        return await self._engine.db.write(write)

    async def enable(self, workflow: str) -> SwitchResult:
        """Runs of ``workflow`` start again; runs paused with it are resumed too."""
        self._check_known("workflow", workflow)

        def write(conn: Conn) -> SwitchResult:
            changed = set_switch(conn, "workflow", workflow, "disabled", False)
            set_switch(conn, "workflow", workflow, "paused", False)
            resumed = resume_runs_of(conn, "workflow", workflow)
            return SwitchResult("workflow", workflow, "enabled", changed, resumed, "resumed")

        result = await self._engine.db.write(write)
        self._engine.work_available.set()
        return result

    async def switches(self) -> list[Switch]:
        return await self._engine.db.read(list_switches)

    def _check_known(self, scope: Scope, name: str) -> None:
        """Switching a name nobody runs would change nothing an operator could see: refuse it."""
        if scope == "workflow":
            self._engine.resolve(name)
            return
        queues = {wf.queue for wf in self._engine.workflows.values()} | set(self._engine.queues)
        if name not in queues:
            raise InvalidInput(f"unknown queue {name!r} (known: {', '.join(sorted(queues)) or 'none'})")

    # -- flags -----------------------------------------------------------------------------------------

    async def set_flag(self, name: str, value: Any) -> Flag:
        return await self._engine.db.write(lambda conn: set_flag(conn, name, value))

    async def flag(self, name: str) -> Flag:
        found = await self._engine.db.read(lambda conn: get_flag(conn, name))
        if found is None:
            raise InvalidInput(f"flag {name!r} is not set: see `crewline flags list`")
        return found

    async def flags(self) -> list[Flag]:
        return await self._engine.db.read(list_flags)

    async def unset_flag(self, name: str) -> None:
        check_flag_name(name)
        if not await self._engine.db.write(lambda conn: delete_flag(conn, name)):
            raise InvalidInput(f"flag {name!r} is not set: see `crewline flags list`")
