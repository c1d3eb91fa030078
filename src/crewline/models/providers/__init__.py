"""Provider adapters: one module per wire format, registered by format name.

"Who authenticates" (an :class:`Endpoint`: base URL, key, headers) is separate from "which wire format"
(an :class:`Adapter` subclass), so OpenAI, Groq, DeepSeek, OpenRouter, vLLM and llama.cpp all share the
``openai`` adapter. A new format is a module defining an adapter class decorated with :func:`register`.
"""

from __future__ import annotations

import importlib

from ...errors import ConfigError
from .base import Adapter, Endpoint, register, registered

__all__ = ["Adapter", "Endpoint", "adapter_class", "register", "registered"]

# Formats shipped with crewline, imported on first use so an unused one costs nothing.
_BUILTIN = {
    "openai": "openai",
    "openai-responses": "openai_responses",
    "anthropic": "anthropic",
    "gemini": "gemini",
    "ollama": "ollama",
    "local": "local",
}


def adapter_class(fmt: str) -> type[Adapter]:
    """The adapter class registered for wire format ``fmt``."""
    found = registered().get(fmt)
    if found is None and fmt in _BUILTIN:
        importlib.import_module(f"{__name__}.{_BUILTIN[fmt]}")
        found = registered().get(fmt)
    if found is None:
        known = sorted(set(registered()) | set(_BUILTIN))
        raise ConfigError(f"unknown wire format {fmt!r}: use one of {', '.join(known)}")
    return found
