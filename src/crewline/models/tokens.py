"""Token estimates made before a call, without the model's tokenizer.

Three estimates, for three uses. :func:`input_token_ceiling` sizes budget reservations: it must never be
below what a provider bills, so it counts every UTF-8 byte of text as a token (a byte-level BPE, and a
SentencePiece tokenizer with byte fallback, never makes more tokens than bytes) and adds what each wire
format bills around the text: role markers and separators per message (OpenAI's chat format bills 3-4,
with the reply's priming 3 more per request), the tool-use preamble providers put in front of tool
definitions (Anthropic's is 264-346 tokens), and images at the most a large one is billed. A provider
that bills beyond even that (a hidden system prompt) is learned from: see :mod:`.calibration`.
:func:`estimate_input_tokens` sizes TPM admission at 2 bytes a token. :func:`estimate_text_tokens` sizes a request against a context window, where too low an
estimate means the provider refuses the call: measured with SmolLM2's tokenizer (a byte-level BPE like
GPT's and Llama's), English prose and code run 3.6 bytes a token, German 2.6, Chinese 1.7, emoji 1.4,
base64 1.25 and digits 1.0 (each digit its own token). So it counts ASCII text other than digits at 2
bytes a token, and every digit and every byte of a non-ASCII character as a token: high for prose (which
leaves room unused rather than overflowing), right for digits, emoji and CJK. Long random ASCII (base64,
hex) runs up to 1.6 times over it; :data:`WINDOW_MARGIN` keeps some room for that.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from .types import Message, ModelRequest, TextPart, Tool

__all__ = [
    "IMAGE_CEILING",
    "IMAGE_TOKENS",
    "MESSAGE_CEILING",
    "MESSAGE_TOKENS",
    "REQUEST_CEILING",
    "TOOLS_CEILING",
    "WINDOW_MARGIN",
    "estimate_input_tokens",
    "estimate_messages_tokens",
    "estimate_text_tokens",
    "input_token_ceiling",
    "text_token_ceiling",
]

IMAGE_TOKENS = 1600  # what providers charge for a large image, roughly; small ones cost less
MESSAGE_TOKENS = 8  # role markers and separators around each message
WINDOW_MARGIN = 0.9  # the share of a context window a fitted request may fill by the estimate
_DIGITS = "0123456789"
# Ceilings of what the wire formats bill around the text (see the module docstring); generous on purpose:
# a reservation a little high only holds budget a moment longer, one too low lets a budget be overspent.
MESSAGE_CEILING = 8
REQUEST_CEILING = 16
TOOLS_CEILING = 512
IMAGE_CEILING = 3000


def input_token_ceiling(request: ModelRequest) -> int:
    """At least the input tokens any provider bills for ``request`` (see the module docstring)."""
    total = REQUEST_CEILING
    for m in request.messages:
        total += MESSAGE_CEILING
        for p in m.parts:
            total += len(p.text.encode()) if isinstance(p, TextPart) else IMAGE_CEILING
        for c in m.tool_calls:
            total += (
                len(c.name.encode()) + len(json.dumps(c.arguments, default=str).encode()) + MESSAGE_CEILING
            )
    if request.tools:
        total += TOOLS_CEILING
        for t in request.tools:
            total += len(f"{t.name}{t.description}".encode()) + len(
                json.dumps(dict(t.parameters), default=str).encode()
            )
    if request.response_schema is not None:
        total += len(json.dumps(request.response_schema, default=str).encode()) + TOOLS_CEILING
    return total


def text_token_ceiling(texts: Iterable[str]) -> int:
    """At least the input tokens an embedding provider bills for ``texts``."""
    return REQUEST_CEILING + sum(len(t.encode()) + MESSAGE_CEILING for t in texts)


def estimate_input_tokens(request: ModelRequest) -> int:
    """Input tokens at 2 bytes a token (real text runs 3-4), plus images, tool schemas and the output schema."""
    size = 0
    for m in request.messages:
        for p in m.parts:
            size += len(p.text.encode()) if isinstance(p, TextPart) else 2 * IMAGE_TOKENS
        size += sum(len(str(c.arguments)) + len(c.name) for c in m.tool_calls) + 8
    size += sum(len(str(t.parameters)) + len(t.description) + len(t.name) for t in request.tools)
    if request.response_schema is not None:
        size += len(str(request.response_schema))
    return size // 2 + 1


def estimate_text_tokens(text: str) -> int:
    """An estimate of ``text``'s tokens that errs high (see the module docstring)."""
    ascii_chars = len(text.encode("ascii", "ignore"))
    non_ascii_bytes = len(text.encode()) - ascii_chars
    digits = sum(text.count(d) for d in _DIGITS)
    return (ascii_chars - digits + 1) // 2 + digits + non_ascii_bytes


def estimate_messages_tokens(messages: Iterable[Message], tools: Iterable[Tool] = ()) -> int:
    """The tokens of a conversation and its tool schemas, by :func:`estimate_text_tokens`."""
    total = 0
    for m in messages:
        total += MESSAGE_TOKENS
        for p in m.parts:
            total += estimate_text_tokens(p.text) if isinstance(p, TextPart) else IMAGE_TOKENS
        for c in m.tool_calls:
            total += estimate_text_tokens(f"{c.name}{c.arguments}")
    for t in tools:
        total += estimate_text_tokens(f"{t.name}{t.description}{t.parameters}")
    return total
