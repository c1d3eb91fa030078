"""``largest`` returns exactly the k largest values, with the sampling shortcut and without."""

from __future__ import annotations

import numpy as np
import pytest

from crewline.memory import topk


@pytest.mark.parametrize("n", [10, 70_000, 300_000])
@pytest.mark.parametrize("k", [1, 10, 50, 1000])
@pytest.mark.parametrize("kind", ["normal", "ties", "sorted", "masked"])
def test_the_k_largest_values_exactly(n: int, k: int, kind: str) -> None:
    rng = np.random.default_rng(n + k)
    values = rng.normal(size=n).astype(np.float32)
    if kind == "ties":
        values = np.round(values * 3).astype(np.float32)  # a handful of distinct values
    elif kind == "sorted":
        values = np.sort(values)  # the largest all after the last sampled one
    elif kind == "masked":
        values[rng.random(n) < 0.9] = -np.inf
    got = topk.largest(values, k)
    assert len(got) == min(k, n) and len(set(got.tolist())) == len(got)
    assert np.array_equal(np.sort(values[got]), np.sort(values)[n - min(k, n) :])


def test_the_shortcut_is_taken_on_large_arrays(monkeypatch: pytest.MonkeyPatch) -> None:
    partitioned: list[int] = []
    real = np.argpartition

    def counting(a, kth):  # type: ignore[no-untyped-def]
        partitioned.append(len(a))
        return real(a, kth)

    monkeypatch.setattr(topk.np, "argpartition", counting)
    values = np.random.default_rng(1).normal(size=1_000_000)
    topk.largest(values, 50)
    assert partitioned and max(partitioned) < 100_000  # never the whole million
