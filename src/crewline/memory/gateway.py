"""What memory needs of the model gateway, declared here so memory never imports ``crewline.models``.

The gateway (:class:`crewline.models.Gateway`) satisfies both protocols structurally; so does any object
shaped like it, which is how tests and other hosts plug in their own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

__all__ = ["Completion", "CompletionGateway", "EmbeddingGateway", "Embeddings"]


class Embeddings(Protocol):
    @property
    def vectors(self) -> Sequence[Sequence[float]]: ...


class EmbeddingGateway(Protocol):
    """Embeds texts (one vector per text, in order) with a named model."""

    async def embed(self, texts: list[str], model: str | None = None) -> Embeddings: ...


class Completion(Protocol):
    @property
    def text(self) -> str: ...


class CompletionGateway(Protocol):
    """Completes a conversation with a named model; further keywords (``budget_scope``, ``run_id``) pass
    through to the gateway."""

    async def complete(
        self,
        model: str | None = None,
        messages: Sequence[dict[str, Any]] | str = (),
        *,
        max_tokens: int | None = None,
    ) -> Completion: ...
