"""Differences shown side by side: a review's edit against its preview, two versions of a prompt.

One home for the console's diffs: text is compared line by line (``difflib``), anything else is first
written as indented JSON with sorted keys, so an edited field shows as one changed line.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["DiffRow", "as_lines", "side_by_side"]

Change = Literal["same", "changed", "added", "removed"]


@dataclass(frozen=True)
class DiffRow:
    """One row of a side-by-side table: the old line (number and text) beside the new one."""

    change: Change
    old_no: int | None
    old: str
    new_no: int | None
    new: str


def as_lines(value: Any) -> list[str]:
    """What a value looks like when compared: text as its lines, anything else as indented JSON."""
    if isinstance(value, str):
        return value.splitlines()
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str).splitlines()


def side_by_side(old: Any, new: Any) -> list[DiffRow]:
    """Rows pairing the lines of ``old`` and ``new``: unchanged, changed, added or removed."""
    a, b = as_lines(old), as_lines(new)
    rows: list[DiffRow] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if tag == "equal":
            rows += [
                DiffRow("same", i + 1, a[i], j + 1, b[j])
                for i, j in zip(range(i1, i2), range(j1, j2), strict=True)
            ]
            continue
        width = max(i2 - i1, j2 - j1)
        for k in range(width):
            i, j = i1 + k, j1 + k
            has_old, has_new = i < i2, j < j2
            change: Change = "changed" if has_old and has_new else "removed" if has_old else "added"
            rows.append(
                DiffRow(
                    change,
                    i + 1 if has_old else None,
                    a[i] if has_old else "",
                    j + 1 if has_new else None,
                    b[j] if has_new else "",
                )
            )
    return rows
