"""The model proxy: OpenAI- and Anthropic-compatible endpoints over the crewline gateway.

Every proxied call goes through :class:`crewline.models.Gateway` exactly like a library call (routing,
fallbacks, limits, cache, the budget ledger, the call record), counted against the calling key's budget.
Errors answer in each protocol's own shape; a failure after a stream started is sent inside the stream.
"""

from __future__ import annotations

from fastapi import APIRouter

from . import anthropic_api, openai_api

__all__ = ["router"]

router = APIRouter(include_in_schema=False)
router.include_router(openai_api.router)
router.include_router(anthropic_api.router)
