"""The indices of the k largest of many scores, exactly, without partitioning all of them.

``np.argpartition`` over a million scores takes about ten milliseconds. Every subset's k-th largest value
is at most the whole array's, so the k-th largest of a strided sample is a threshold every one of the k
largest passes: one comparison pass keeps the few thousand that pass, and only those are partitioned.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

__all__ = ["largest"]

_SAMPLE_FROM = 65_536  # below this, partitioning everything is as quick
_STRIDE = 64


def largest(values: NDArray[np.floating], k: int) -> NDArray[np.intp]:
    """Indices of the ``k`` largest of ``values`` (all of them if fewer), in no order; among equal values
    at the boundary, any."""
    n = len(values)
    if k >= n:
        return np.arange(n)
    if k <= 0:
        return np.arange(0)
    if n >= _SAMPLE_FROM and k * _STRIDE * 4 <= n:
        sample = values[::_STRIDE]
        floor = np.partition(sample, len(sample) - k)[len(sample) - k]
        passed = np.flatnonzero(values >= floor)  # holds the k largest: floor <= the k-th largest
        if len(passed) < n // 4:
            return passed[np.argpartition(values[passed], len(passed) - k)[len(passed) - k :]]
    return np.argpartition(values, n - k)[n - k :]
