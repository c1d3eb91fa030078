"""The model gateway: canonical types, provider adapters, routing, limits, cache, prices, budgets, records.

gateway = Gateway.from_settings(settings, db)
reply = await gateway.complete("cheap", [user("Triage this email: ...")], output=Triage, max_tokens=300,
                               budget_scope={"workflow": "triage"})
reply.output, reply.usage, reply.cost, reply.model, reply.latency_ms
"""

from __future__ import annotations

from .call_log import CallRecord
from .calls import CallOptions, CompletionRequest
from .config import ModelsConfig
from .gateway import CallContext, Gateway, ModelStream
from .ledger import BudgetAlert, Ledger
from .prices import Price, PriceTable, shipped_table
from .providers import Adapter, Endpoint, register
from .types import (
    EmbeddingResponse,
    ImagePart,
    Message,
    ModelRequest,
    ModelResponse,
    StreamChunk,
    TextPart,
    Tool,
    ToolCall,
    Usage,
    assistant,
    system,
    tool_result,
    user,
)

__all__ = [
    "Adapter",
    "BudgetAlert",
    "CallContext",
    "CallOptions",
    "CallRecord",
    "CompletionRequest",
    "EmbeddingResponse",
    "Endpoint",
    "Gateway",
    "ImagePart",
    "Ledger",
    "Message",
    "ModelRequest",
    "ModelResponse",
    "ModelStream",
    "ModelsConfig",
    "Price",
    "PriceTable",
    "StreamChunk",
    "TextPart",
    "Tool",
    "ToolCall",
    "Usage",
    "assistant",
    "register",
    "shipped_table",
    "system",
    "tool_result",
    "user",
]
