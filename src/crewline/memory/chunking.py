"""Chunking: sections cut into overlapping pieces on paragraph, then sentence, then word boundaries.

A chunk never crosses a heading, so its heading path describes all of it; long sections become windows
of at most ``size`` characters, each repeating about ``overlap`` characters of the one before so a fact
split across a boundary is still found whole in one of them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import NamedTuple

from ..errors import InvalidInput
from .documents import ParsedDocument

__all__ = ["Chunk", "chunk_document"]


class Chunk(NamedTuple):
    """One piece of a document. (A named tuple of plain values: the cyclic garbage collector stops
    tracking it, so an ingest's hundred thousand chunks do not make it scan more.)"""

    position: int
    heading: str | None
    text: str
    char_start: int  # offsets in the parsed document's text
    char_end: int


_BREAKS = (re.compile(r"\n\s*\n"), re.compile(r"(?<=[.!?])\s+|\n"), re.compile(r"\s+"))


def chunk_document(doc: ParsedDocument, *, size: int = 1200, overlap: int = 150) -> list[Chunk]:
    if size < 100:
        raise InvalidInput(f"chunk size must be at least 100 characters, got {size}")
    if not 0 <= overlap < size // 2:
        raise InvalidInput(f"chunk overlap must be between 0 and half the chunk size, got {overlap}")
    chunks: list[Chunk] = []
    for section in doc.sections:
        for start, end in _windows(section.text, size, overlap):
            piece = section.text[start:end].strip()
            if piece:
                lead = len(section.text[start:end]) - len(section.text[start:end].lstrip())
                s = section.start + start + lead
                chunks.append(Chunk(len(chunks), section.heading, piece, s, s + len(piece)))
    return chunks


def _windows(text: str, size: int, overlap: int) -> Iterator[tuple[int, int]]:
    """(start, end) spans covering ``text``: each at most ``size`` long, cut at the best boundary."""
    start, n = 0, len(text)
    while start < n:
        if n - start <= size:
            yield start, n
            return
        end = _cut(text, start, start + size)
        yield start, end
        nxt = _cut_back(text, start, max(start + 1, end - overlap)) if overlap else end
        start = nxt if nxt > start else end


def _cut(text: str, start: int, limit: int) -> int:
    """The last boundary at or before ``limit`` (and past the window's first half), else ``limit``."""
    floor = start + (limit - start) // 2
    for pattern in _BREAKS:
        best = -1
        for m in pattern.finditer(text, floor, limit):
            best = m.end()
        if best > floor:
            return best
    return limit


def _cut_back(text: str, floor: int, at: int) -> int:
    """Start the overlap at a word boundary at or after ``at`` so no chunk begins mid-word."""
    m = re.compile(r"\s+").search(text, at)
    return m.end() if m is not None and m.end() < len(text) else at
