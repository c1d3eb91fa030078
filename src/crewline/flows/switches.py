"""Operator switches and flags, kept in the database so every process sees the same ones.

A switch pauses a whole workflow or queue (its runs are not claimed; see :func:`paused_names`) or disables
a workflow (no run of it starts: :func:`check_startable`). A flag is a named JSON value workflows read
with ``ctx.flag(name, default=...)``. This module alone reads and writes the ``switches`` and ``flags``
tables; each function runs inside the caller's transaction.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any, Literal

from ..errors import InvalidInput, WorkflowDisabled
from ..store.database import Conn
from ..store.payloads import dump, load_json

__all__ = [
    "Flag",
    "Scope",
    "Switch",
    "check_flag_name",
    "check_startable",
    "delete_flag",
    "disabled_workflows",
    "get_flag",
    "list_flags",
    "list_switches",
    "paused_names",
    "set_flag",
    "set_switch",
]

Scope = Literal["workflow", "queue"]
Setting = Literal["paused", "disabled"]
_FLAG_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,99}$")


@dataclass(frozen=True)
class Switch:
    scope: Scope
    name: str
    paused: bool
    disabled: bool
    updated_at: float

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Flag:
    name: str
    value: Any
    updated_at: float

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def set_switch(conn: Conn, scope: Scope, name: str, setting: Setting, on: bool) -> bool:
    """Turn ``setting`` of the workflow or queue ``name`` on or off; returns whether it changed."""
    row = conn.one(f"SELECT {setting} FROM switches WHERE scope = ? AND name = ?", (scope, name))
    if row is not None and bool(row[0]) == on:
        return False
    conn.execute(
        f"INSERT INTO switches (scope, name, {setting}, updated_at) VALUES (?, ?, ?, ?) "
        f"ON CONFLICT (scope, name) DO UPDATE SET {setting} = excluded.{setting}, "
        "updated_at = excluded.updated_at",
        (scope, name, int(on), time.time()),
    )
    return True


def list_switches(conn: Conn) -> list[Switch]:
    """Every workflow and queue with a switch on."""
    rows = conn.all(
        "SELECT scope, name, paused, disabled, updated_at FROM switches WHERE paused = 1 OR disabled = 1 "
        "ORDER BY scope, name"
    )
    return [Switch(r[0], r[1], bool(r[2]), bool(r[3]), float(r[4])) for r in rows]


def paused_names(conn: Conn) -> tuple[list[str], list[str]]:
    """(paused workflows, paused queues): their runs wait, holding no worker, until resumed."""
    rows = conn.all("SELECT scope, name FROM switches WHERE paused = 1")
    return [n for s, n in rows if s == "workflow"], [n for s, n in rows if s == "queue"]


def check_startable(conn: Conn, workflow: str) -> None:
    """Raise :class:`WorkflowDisabled` if an operator disabled ``workflow``; called where runs start."""
    row = conn.one("SELECT disabled FROM switches WHERE scope = 'workflow' AND name = ?", (workflow,))
    if row is not None and row[0]:
        raise WorkflowDisabled(
            f"workflow {workflow!r} is disabled and starts no runs: "
            f"enable it with `crewline workflows enable {workflow}`"
        )


def disabled_workflows(conn: Conn) -> set[str]:
    rows = conn.all("SELECT name FROM switches WHERE scope = 'workflow' AND disabled = 1")
    return {str(r[0]) for r in rows}


# -- flags -------------------------------------------------------------------------------------------


def check_flag_name(name: str) -> str:
    if not _FLAG_NAME.match(name):
        raise InvalidInput(
            f"flag name {name[:120]!r} is not valid: use letters, digits and . _ : - "
            "(at most 100 characters), e.g. agents.enabled"
        )
    return name


def set_flag(conn: Conn, name: str, value: Any) -> Flag:
    check_flag_name(name)
    now = time.time()
    conn.execute(
        "INSERT INTO flags (name, value, updated_at) VALUES (?, ?, ?) "
        "ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        (name, dump(value, f"flag {name}").decode(), now),
    )
    return Flag(name, value, now)


def get_flag(conn: Conn, name: str) -> Flag | None:
    row = conn.one("SELECT name, value, updated_at FROM flags WHERE name = ?", (check_flag_name(name),))
    return None if row is None else Flag(row[0], load_json(row[1]), float(row[2]))


def list_flags(conn: Conn) -> list[Flag]:
    rows = conn.all("SELECT name, value, updated_at FROM flags ORDER BY name")
    return [Flag(r[0], load_json(r[1]), float(r[2])) for r in rows]


def delete_flag(conn: Conn, name: str) -> bool:
    cur = conn.execute("DELETE FROM flags WHERE name = ?", (check_flag_name(name),))
    return int(cur.rowcount) > 0
