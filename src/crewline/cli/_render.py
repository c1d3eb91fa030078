"""Values as a person reads them: text as text (its line breaks kept), objects as indented fields.

``--json`` prints what a program reads; this is for the terminal, where a reply draft JSON-escaped into
one line with ``\\n`` in it is unreadable.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["render"]


def render(value: Any, indent: int = 2) -> list[str]:
    """``value`` as lines indented by ``indent``: strings verbatim, mappings and lists one field a line."""
    pad = " " * indent
    if isinstance(value, str):
        return [pad + line for line in value.splitlines()] or [pad + '""']
    if isinstance(value, dict) and value:
        return _fields(value, indent)
    if isinstance(value, list) and value:
        lines: list[str] = []
        for item in value:
            inner = render(item, indent + 2)
            lines += [f"{pad}- {inner[0].lstrip()}", *inner[1:]]
        return lines
    return [pad + json.dumps(value, default=str)]


def _fields(value: dict[str, Any], indent: int) -> list[str]:
    pad = " " * indent
    lines: list[str] = []
    for key, item in value.items():
        nested = isinstance(item, dict | list) and bool(item)
        if nested or (isinstance(item, str) and "\n" in item):
            lines += [f"{pad}{key}:", *render(item, indent + 2)]
        else:
            lines.append(f"{pad}{key}: {item if isinstance(item, str) else json.dumps(item, default=str)}")
    return lines
