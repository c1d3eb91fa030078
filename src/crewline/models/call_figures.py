"""Mergeable figures of a set of model calls: what an hour of calls is rolled up into, and what a report
adds back together over many hours.

Sums and counts add exactly. Latency and time to first token are kept as histograms over fixed
log-spaced buckets, each 2% wider than the one below (from 0.01 ms up; faster values count as 0): a
percentile read from a merged histogram takes the geometric middle of its bucket, so it is within 1% of
the exact value (interpolated between neighbours like ``percentile_cont``). Distinct runs cannot be
summed across hours (a run's calls span hours), so each group keeps a HyperLogLog sketch of its run
ids (4,096 registers, a standard error of 1.6%; small counts are close to exact): sketches merge by a
register-wise maximum, which is what lets a 30-day report count runs without reading 30 days of calls.
Token counts (:data:`TOKENS`) add exactly too, when the rows read carry them (the rollups' do; a
report's window of raw rows leaves them out to stay on its covering index).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["GROWTH", "TOKENS", "CallFigures", "CallRows", "Histogram", "RunSketch", "group_figures"]

GROWTH = 1.02  # each histogram bucket's upper bound over its lower bound
FLOOR_MS = 0.01
_LOG_GROWTH = math.log(GROWTH)
_P = 12  # HyperLogLog precision: 2**12 registers
_M = 1 << _P
_REST = 64 - _P
_Ints = npt.NDArray[np.int64]
TOKENS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "reasoning_tokens")
_NO_TOKENS = (0,) * len(TOKENS)


@dataclass(frozen=True)
class Histogram:
    """Counts per bucket: ``index`` sorted and unique, ``count`` beside it."""

    index: _Ints = field(default_factory=lambda: np.zeros(0, np.int64))
    count: _Ints = field(default_factory=lambda: np.zeros(0, np.int64))

    @classmethod
    def of(cls, values: npt.NDArray[np.float64]) -> Histogram:
        values = values[~np.isnan(values)]
        buckets = np.zeros(len(values), np.int64)
        above = values >= FLOOR_MS
        buckets[above] = np.floor(np.log(values[above] / FLOOR_MS) / _LOG_GROWTH).astype(np.int64) + 1
        index, count = np.unique(buckets, return_counts=True)
        return cls(index.astype(np.int64), count.astype(np.int64))

    @classmethod
    def merged(cls, parts: Sequence[Histogram]) -> Histogram:
        if len(parts) == 1:
            return parts[0]
        index = np.concatenate([p.index for p in parts]) if parts else np.zeros(0, np.int64)
        count = np.concatenate([p.count for p in parts]) if parts else np.zeros(0, np.int64)
        unique, where = np.unique(index, return_inverse=True)
        return cls(unique.astype(np.int64), np.bincount(where, weights=count).astype(np.int64))

    def to_bytes(self) -> bytes:
        return np.column_stack([self.index, self.count]).astype("<i8").tobytes()

    @classmethod
    def from_bytes(cls, raw: bytes) -> Histogram:
        """Also from several histograms' bytes joined together: they add up."""
        pairs = np.frombuffer(raw, "<i8").reshape(-1, 2).astype(np.int64)
        index, where = np.unique(pairs[:, 0], return_inverse=True)
        return cls(index.astype(np.int64), np.bincount(where, weights=pairs[:, 1]).astype(np.int64))

    def percentiles(self, fractions: Iterable[float]) -> tuple[float | None, ...]:
        """Interpolated like ``percentile_cont``, each value standing at its bucket's geometric middle."""
        n = int(self.count.sum())
        if n == 0:
            return tuple(None for _ in fractions)
        ends = np.cumsum(self.count)
        mids = np.where(self.index == 0, 0.0, FLOOR_MS * GROWTH ** (self.index - 0.5))

        def at(rank: int) -> float:
            return float(mids[int(np.searchsorted(ends, rank, side="right"))])

        out: list[float | None] = []
        for f in fractions:
            pos = f * (n - 1)
            low = math.floor(pos)
            out.append(at(low) + (pos - low) * (at(min(low + 1, n - 1)) - at(low)))
        return tuple(out)


@dataclass(frozen=True)
class RunSketch:
    """A HyperLogLog sketch of run ids, kept sparse: the registers that are set, and their values."""

    register: _Ints = field(default_factory=lambda: np.zeros(0, np.int64))
    rank: _Ints = field(default_factory=lambda: np.zeros(0, np.int64))

    @classmethod
    def of(cls, run_ids: Iterable[str]) -> RunSketch:
        return cls.of_hashes(*_run_hashes(list(run_ids)))

    @classmethod
    def of_hashes(cls, register: _Ints, rank: _Ints) -> RunSketch:
        """From each run's register and rank (see :func:`_run_hashes`); repeats are harmless."""
        dense = np.zeros(_M, np.int64)
        np.maximum.at(dense, register, rank)
        (used,) = np.nonzero(dense)
        return cls(used.astype(np.int64), dense[used])

    @classmethod
    def merged(cls, parts: Sequence[RunSketch]) -> RunSketch:
        if len(parts) == 1:
            return parts[0]
        if not parts:
            return cls()
        return cls.of_hashes(
            np.concatenate([p.register for p in parts]), np.concatenate([p.rank for p in parts])
        )

    def to_bytes(self) -> bytes:
        return np.column_stack([self.register, self.rank]).astype("<i4").tobytes()

    @classmethod
    def from_bytes(cls, raw: bytes) -> RunSketch:
        """Also from several sketches' bytes joined together: they merge."""
        pairs = np.frombuffer(raw, "<i4").reshape(-1, 2).astype(np.int64)
        return cls.of_hashes(pairs[:, 0], pairs[:, 1])

    def estimate(self) -> int:
        empty = _M - len(self.register)
        if empty == _M:
            return 0
        harmonic = float(empty + np.sum(np.exp2(-self.rank.astype(np.float64))))
        raw = 0.7213 / (1 + 1.079 / _M) * _M * _M / harmonic
        if raw <= 2.5 * _M and empty:
            return round(_M * math.log(_M / empty))  # linear counting: better for small sets
        return round(raw)


@dataclass
class CallFigures:
    """Everything a report needs from a set of calls, in a form that adds up across hours."""

    calls: int = 0
    cost: float = 0.0
    errors: int = 0
    retried: int = 0
    cache_hits: int = 0
    unpriced: int = 0
    run_cost: float = 0.0
    tokens: tuple[int, ...] = _NO_TOKENS  # summed per name of :data:`TOKENS`
    errors_by_class: dict[str, int] = field(default_factory=dict)
    latency: Histogram = field(default_factory=Histogram)
    ttft: Histogram = field(default_factory=Histogram)
    runs: RunSketch = field(default_factory=RunSketch)

    @classmethod
    def merged(cls, parts: Sequence[CallFigures], shapes: bool = True) -> CallFigures:
        """The figures of all ``parts`` together; without ``shapes`` only the sums and counts."""
        errors: dict[str, int] = {}
        for p in parts:
            for name, n in p.errors_by_class.items():
                errors[name] = errors.get(name, 0) + n
        out = cls(
            calls=sum(p.calls for p in parts),
            cost=sum(p.cost for p in parts),
            errors=sum(p.errors for p in parts),
            retried=sum(p.retried for p in parts),
            cache_hits=sum(p.cache_hits for p in parts),
            unpriced=sum(p.unpriced for p in parts),
            run_cost=sum(p.run_cost for p in parts),
            tokens=tuple(sum(column) for column in zip(_NO_TOKENS, *(p.tokens for p in parts), strict=True)),
            errors_by_class=errors,
        )
        if shapes:
            out.latency = Histogram.merged([p.latency for p in parts])
            out.ttft = Histogram.merged([p.ttft for p in parts])
            out.runs = RunSketch.merged([p.runs for p in parts])
        return out


@dataclass(frozen=True)
class CallRows:
    """Raw call rows as columns, in the order :func:`group_figures` reads them."""

    run_id: list[str | None]
    failed: npt.NDArray[np.bool_]
    error_class: list[str | None]
    cost: npt.NDArray[np.float64]
    unpriced: npt.NDArray[np.bool_]
    cache_hit: npt.NDArray[np.bool_]
    retried: npt.NDArray[np.bool_]
    latency: npt.NDArray[np.float64]
    ttft: npt.NDArray[np.float64]
    tokens: _Ints | None = None  # a column per name of :data:`TOKENS`, when the rows carry them

    @classmethod
    def of(cls, rows: Sequence[Sequence[Any]], tokens: bool = False) -> CallRows:
        """From ``(run_id, status, error_class, cost, price_known, cache_hit, attempts, latency_ms,
        ttft_ms)`` tuples, followed by the :data:`TOKENS` columns with ``tokens``."""
        width = 9 + len(TOKENS) * tokens
        cols = list(zip(*rows, strict=True)) if rows else [()] * width
        return cls(
            run_id=list(cols[0]),
            failed=np.array([s == "error" for s in cols[1]], bool),
            error_class=list(cols[2]),
            cost=np.array(cols[3], np.float64),
            unpriced=np.array([not k for k in cols[4]], bool),
            cache_hit=np.array([bool(c) for c in cols[5]], bool),
            retried=np.array([a > 1 for a in cols[6]], bool),
            latency=np.array([np.nan if v is None else v for v in cols[7]], np.float64),
            ttft=np.array([np.nan if v is None else v for v in cols[8]], np.float64),
            tokens=np.array(cols[9:], np.int64).reshape(len(TOKENS), -1) if tokens else None,
        )


def group_figures(rows: CallRows, labels: Sequence[Hashable]) -> dict[Hashable, CallFigures]:
    """The figures of ``rows`` per label (``labels[i]`` is row i's group)."""
    codes: dict[Hashable, int] = {}
    code = np.array([codes.setdefault(label, len(codes)) for label in labels], np.int64)
    n = len(codes)

    def total(values: npt.NDArray[Any]) -> list[float]:
        return [float(v) for v in np.bincount(code, weights=values.astype(np.float64), minlength=n)]

    calls, cost = np.bincount(code, minlength=n), total(rows.cost)
    errors, retried = total(rows.failed), total(rows.retried)
    cache_hits, unpriced = total(rows.cache_hit), total(rows.unpriced)
    register, rank = _run_hashes(rows.run_id)
    run_cost = total(np.where(register >= 0, rows.cost, 0.0))
    tokens = [total(column) for column in rows.tokens] if rows.tokens is not None else []
    out: dict[Hashable, CallFigures] = {}
    for label, g in codes.items():
        mine = code == g
        out[label] = CallFigures(
            calls=int(calls[g]),
            cost=cost[g],
            errors=int(errors[g]),
            retried=int(retried[g]),
            cache_hits=int(cache_hits[g]),
            unpriced=int(unpriced[g]),
            run_cost=run_cost[g],
            tokens=tuple(int(column[g]) for column in tokens) if tokens else _NO_TOKENS,
            errors_by_class=_error_classes(rows, np.nonzero(mine & rows.failed)[0]),
            latency=Histogram.of(rows.latency[mine]),
            ttft=Histogram.of(rows.ttft[mine]),
            runs=RunSketch.of_hashes(register[mine & (register >= 0)], rank[mine & (register >= 0)]),
        )
    return out


def _run_hashes(run_ids: Sequence[str | None]) -> tuple[_Ints, _Ints]:
    """Each run id's HyperLogLog register and rank (-1 and 0 where there is no run)."""
    seen: dict[str, tuple[int, int]] = {}
    register, rank = np.full(len(run_ids), -1, np.int64), np.zeros(len(run_ids), np.int64)
    for i, run_id in enumerate(run_ids):
        if run_id is None:
            continue
        hashed = seen.get(run_id)
        if hashed is None:
            h = int.from_bytes(hashlib.blake2b(run_id.encode(), digest_size=8).digest(), "big")
            rest = h & ((1 << _REST) - 1)
            hashed = seen[run_id] = (h >> _REST, _REST - rest.bit_length() + 1)
        register[i], rank[i] = hashed
    return register, rank


def _error_classes(rows: CallRows, failed: _Ints) -> dict[str, int]:
    out: dict[str, int] = {}
    for i in failed:
        name = rows.error_class[i] or "unknown"
        out[name] = out.get(name, 0) + 1
    return out
