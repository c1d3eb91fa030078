"""``ctx.flag``: read an operator's flag as a step, so a replay sees the value the run saw.

The value is read and recorded in one checkpoint transaction; a flag changed afterwards (``crewline flags
set``) steers runs that read it later, never the past of one that already did.
"""

from __future__ import annotations

from typing import Any

from ..store.database import Conn
from ..store.payloads import dump
from .journal import Journal, Outcome
from .switches import check_flag_name, get_flag

__all__ = ["read_flag"]


async def read_flag(journal: Journal, name: str, default: Any) -> Any:
    check_flag_name(name)
    entry = await journal.begin(name, "flag")
    if entry.finished:
        return journal.replay(entry)

    def read_and_record(conn: Conn) -> Any:
        found = get_flag(conn, name)
        value = default if found is None else found.value
        journal.write(conn, entry, Outcome("done", dump(value, f"flag {name}")))
        return value

    value = await journal.transact(read_and_record)
    journal.crash_point("after_step_commit", entry.n)
    return value
