"""How the review, prompt, memory, alert and key pages write times, ages and money (``fmt`` in their
templates)."""

from __future__ import annotations

import time

__all__ = ["FMT"]


class _Formats:
    @staticmethod
    def time(at: float | None) -> str:
        """A moment in UTC, to the second; ``-`` for none."""
        return "-" if at is None else time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at))

    @staticmethod
    def iso(at: float | None) -> str:
        return "" if at is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))

    @staticmethod
    def age(seconds: float) -> str:
        """How long something has waited, in its largest unit: 45s, 12m, 5h, 3d."""
        for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
            if seconds >= 2 * size or (unit == "m" and seconds >= size):
                return f"{int(seconds // size)}{unit}"
        return f"{max(0, int(seconds))}s"

    @staticmethod
    def money(dollars: float | None) -> str:
        return "-" if dollars is None else f"${dollars:.4f}"


FMT = _Formats()
