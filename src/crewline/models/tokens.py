"""Token estimates made before a call: for budget reservations and TPM admission, so deliberately high."""

from __future__ import annotations

from .types import ModelRequest, TextPart

__all__ = ["IMAGE_TOKENS", "estimate_input_tokens"]

IMAGE_TOKENS = 1600  # what providers charge for a large image, roughly; small ones cost less


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
