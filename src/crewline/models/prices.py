"""Honest prices: a versioned table shipped with the package, overridable in config, never a silent $0.

Each entry may also give the model's ``context`` window in tokens, which ``ctx.llm`` keeps a request within;
an entry with only a context says how large a model's window is without pricing it.

Prices are USD per million tokens for input, output, cache reads, cache writes and reasoning. A model is
looked up as ``provider/model``, then by the longest listed ``provider/prefix`` at a ``-`` boundary (so a
dated snapshot like ``gpt-4o-mini-2024-07-18`` prices as ``gpt-4o-mini``), then ``provider/*``. When
nothing matches the price is *unknown*: the cost is recorded as unknown rather than as zero.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any, TypeVar

from .types import Usage

__all__ = ["Price", "PriceTable", "shipped_table"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Price:
    input: float
    output: float
    cache_read: float | None = None
    cache_write: float | None = None
    reasoning: float | None = None

    @classmethod
    def from_mapping(cls, m: Mapping[str, float]) -> Price:
        return cls(
            float(m["input"]),
            float(m["output"]),
            m.get("cache_read"),
            m.get("cache_write"),
            m.get("reasoning"),
        )

    def cost(self, usage: Usage) -> float:
        """USD for ``usage``; cached input at its own rate (input rate when none is listed)."""
        read = usage.cache_read_tokens
        write = usage.cache_write_tokens
        plain_in = max(0, usage.input_tokens - read - write)
        reasoning = min(usage.reasoning_tokens, usage.output_tokens)
        total = (
            plain_in * self.input
            + read * (self.input if self.cache_read is None else self.cache_read)
            + write * (self.input if self.cache_write is None else self.cache_write)
            + (usage.output_tokens - reasoning) * self.output
            + reasoning * (self.output if self.reasoning is None else self.reasoning)
        )
        return total / 1_000_000

    def worst_case(self, input_tokens: int, max_output_tokens: int) -> float:
        """The most a call can cost: every input token uncached, every output token at the dearer rate."""
        out_rate = max(self.output, self.reasoning or 0.0)
        in_rate = max(self.input, self.cache_write or 0.0)
        return (input_tokens * in_rate + max_output_tokens * out_rate) / 1_000_000


class PriceTable:
    """The shipped table with config overrides on top."""

    def __init__(
        self,
        entries: Mapping[str, Mapping[str, float]],
        version: str = "custom",
        overrides: Mapping[str, Mapping[str, float]] | None = None,
    ) -> None:
        # A config price replaces the shipped one whole; a context alone keeps it, and a price alone keeps
        # the shipped context.
        merged = dict(entries)
        for name, given in (overrides or {}).items():
            shipped = merged.get(name, {})
            if "input" in given:
                shipped = {"context": shipped["context"]} if "context" in shipped else {}
            merged[name] = {**shipped, **given}
        self.version = version if not overrides else f"{version}+config"
        self._prices = {k: Price.from_mapping(v) for k, v in merged.items() if "input" in v}
        self._contexts = {k: int(v["context"]) for k, v in merged.items() if "context" in v}
        self._memo: dict[str, Price | None] = {}

    def lookup(self, provider: str, model: str) -> Price | None:
        key = f"{provider}/{model}"
        if key not in self._memo:
            self._memo[key] = _find(self._prices, provider, model)
        return self._memo[key]

    def context(self, provider: str, model: str) -> int | None:
        """The model's context window in tokens, looked up as prices are; ``None`` when not known."""
        return _find(self._contexts, provider, model)

    def __contains__(self, key: str) -> bool:
        return key in self._prices

    def __len__(self) -> int:
        return len(self._prices)


def _find(table: Mapping[str, T], provider: str, model: str) -> T | None:
    """``provider/model``, else the longest listed prefix at a ``-`` boundary, else ``provider/*``."""
    key = f"{provider}/{model}"
    found = table.get(key)
    if found is None:
        best = ""
        for name in table:
            if key.startswith(name + "-") and len(name) > len(best):
                best = name
        found = table.get(best) if best else table.get(f"{provider}/*")
    return found


@lru_cache(maxsize=1)
def _shipped() -> tuple[str, dict[str, Any]]:
    data = json.loads(resources.files(__package__).joinpath("prices.json").read_text(encoding="utf-8"))
    return str(data["version"]), dict(data["models"])


def shipped_table(overrides: Mapping[str, Mapping[str, float]] | None = None) -> PriceTable:
    """The table shipped with this version of crewline, with ``overrides`` (from config) applied."""
    version, models = _shipped()
    return PriceTable(models, version, overrides)
