"""``ctx.checkpoint``: a named marker in a run's steps, which a rerun or a fork can start from by name.

It costs one small step record and does nothing else; replaying it does nothing at all.
"""

from __future__ import annotations

from ..errors import ConfigError
from ..store.payloads import dump
from .journal import Journal, Outcome

__all__ = ["mark_checkpoint"]

_MAX_NAME = 200


async def mark_checkpoint(journal: Journal, name: str) -> None:
    # all digits would read as a step number in `runs rerun --from`
    if not isinstance(name, str) or not name.strip() or name.strip().isdigit() or len(name) > _MAX_NAME:
        raise ConfigError(
            f"ctx.checkpoint needs a name of 1 to {_MAX_NAME} characters, not only digits, got {name!r}: "
            'e.g. ctx.checkpoint("drafted")'
        )
    entry = await journal.begin(name, "checkpoint")
    if entry.record is None:
        await journal.record(entry, Outcome("done", dump(None)))
