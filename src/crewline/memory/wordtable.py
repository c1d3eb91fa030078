"""A text's words found with numpy: a hash of every whitespace-separated word, and a table of hashes.

The local embedder's word cache looks up every word of every text it embeds. With ``str.split`` and a
dict that cost a few hundred nanoseconds a word under the interpreter lock, most of an embedding, and
an ingest's other threads (parsing, the database writer) waited for it. Here a batch of texts is one
byte string, and the word boundaries, a hash of each word and the look-up of the hashes are a few numpy
calls over whole arrays, most of them outside the lock.

The hash is a polynomial over the word's bytes modulo 2**64 with a random odd base per process (prefix
sums over the batch give every word's in a few array operations), with the word's length mixed in and a
64-bit finaliser. Two different words share one with a chance of about 2**-64, except for strings built
against polynomial hashes modulo a power of two (Thue-Morse strings, which collide for any base); those
need words of a thousand bytes or more, so :data:`LONG_WORD` marks the words a caller must not trust to it.
"""

from __future__ import annotations

import os

import numpy as np
from numpy.typing import NDArray

__all__ = ["LONG_WORD", "WordHasher", "WordTable"]

_U64 = NDArray[np.uint64]
_Ints = NDArray[np.int64]

# Words longer than this many bytes are not looked up by hash (see the module's docstring).
LONG_WORD = 128

_SPACE = np.zeros(256, dtype=bool)
_SPACE[[9, 10, 13, 32]] = True  # what str.split() and a whitespace pre-tokenizer split printable ASCII on
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX = (np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB))
_SHIFTS = (np.uint64(30), np.uint64(27), np.uint64(31))


class WordHasher:
    """Hashes of the whitespace-separated words of a byte string (tab, newline, return and space)."""

    def __init__(self) -> None:
        self._base = int.from_bytes(os.urandom(8), "little") | 1
        one = np.ones(1, dtype=np.uint64)
        self._powers = (one, one)  # base**i and base**-i, replaced together (threads share a hasher)

    def words(self, data: bytes) -> tuple[_U64, _Ints, _Ints]:
        """``(hashes, starts, ends)`` of the words of ``data``, in order; no hash is 0."""
        b = np.frombuffer(data, dtype=np.uint8)
        space = np.concatenate(([True], _SPACE[b], [True]))
        edges = np.flatnonzero(space[1:] != space[:-1])  # a word's first byte, then the byte after it
        starts, ends = edges[0::2], edges[1::2]
        powers, inverses = self._powers_for(len(b))
        prefix = np.zeros(len(b) + 1, dtype=np.uint64)
        np.cumsum(b * powers, out=prefix[1:])  # wraps modulo 2**64, as meant
        x = (prefix[ends] - prefix[starts]) * inverses[starts]  # each word's polynomial from its first byte
        x ^= (ends - starts).astype(np.uint64) * _GOLDEN
        x ^= x >> _SHIFTS[0]
        x *= _MIX[0]
        x ^= x >> _SHIFTS[1]
        x *= _MIX[1]
        x ^= x >> _SHIFTS[2]
        x[x == 0] = 1  # 0 marks an empty slot in the table
        return x, starts, ends

    def _powers_for(self, n: int) -> tuple[_U64, _U64]:
        powers, inverses = self._powers
        if len(powers) < n:
            step = np.full(max(n, 2 * len(powers)), self._base, dtype=np.uint64)
            step[0] = 1
            powers = np.cumprod(step, dtype=np.uint64)
            step[1:] = np.uint64(pow(self._base, -1, 1 << 64))
            inverses = np.cumprod(step, dtype=np.uint64)
            self._powers = (powers, inverses)
        return powers[:n], inverses[:n]


class WordTable:
    """Hash -> row, open addressing with linear probing, looked up and filled a whole array at a time.

    At most half full (it doubles beyond that); nothing is ever removed, a table is replaced instead.
    Not thread-safe: its owner holds a lock around :meth:`get` and :meth:`put`.
    """

    def __init__(self) -> None:
        self._reset(12)

    def _reset(self, bits: int) -> None:
        self._bits = bits
        self._keys = np.zeros(1 << bits, dtype=np.uint64)
        self._rows = np.full(1 << bits, -1, dtype=np.int64)
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def get(self, hashes: _U64) -> _Ints:
        """The row of each hash, -1 for a hash not in the table."""
        out = np.full(len(hashes), -1, dtype=np.int64)
        slots = self._slots(hashes)
        pending = np.arange(len(hashes))
        mask = len(self._keys) - 1
        while len(pending):
            at = slots[pending]
            keys = self._keys[at]
            hit = keys == hashes[pending]
            out[pending[hit]] = self._rows[at[hit]]
            on = ~hit & (keys != 0)  # an empty slot ends the probe: not there
            pending = pending[on]
            slots[pending] = (at[on] + 1) & mask
        return out

    def put(self, hashes: _U64, rows: _Ints) -> None:
        """Add hashes not in the table yet (each once) with their rows."""
        if 2 * (self._size + len(hashes)) > len(self._keys):
            held = self._keys != 0
            keys, old = self._keys[held], self._rows[held]
            bits = self._bits + 1
            while (1 << bits) < 2 * (self._size + len(hashes)):
                bits += 1
            self._reset(bits)
            self._insert(keys, old)
        self._insert(hashes, rows)

    def _insert(self, hashes: _U64, rows: _Ints) -> None:
        slots = self._slots(hashes)
        pending = np.arange(len(hashes))
        mask = len(self._keys) - 1
        while len(pending):
            at = slots[pending]
            free = np.flatnonzero(self._keys[at] == 0)
            _, first = np.unique(at[free], return_index=True)  # one new key per free slot this round
            won = free[first]
            self._keys[at[won]] = hashes[pending[won]]
            self._rows[at[won]] = rows[pending[won]]
            left = np.ones(len(pending), dtype=bool)
            left[won] = False
            pending = pending[left]
            slots[pending] = (slots[pending] + 1) & mask
        self._size += len(hashes)

    def _slots(self, hashes: _U64) -> _Ints:
        return (hashes >> np.uint64(64 - self._bits)).astype(np.int64)
