"""The public surface of crewline.models and crewline.testing, pinned: changing it is a decision."""

from __future__ import annotations

import crewline.models
import crewline.testing

MODELS = [
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
TESTING = [
    "FakeProvider",
    "FakeSlack",
    "Fault",
    "Reply",
    "ScriptedModel",
    "SeenRequest",
    "SlackUser",
    "example_for_schema",
    "fake_vector",
    "tool_call",
]


def test_models_surface() -> None:
    assert crewline.models.__all__ == MODELS == sorted(MODELS)
    assert all(hasattr(crewline.models, name) for name in MODELS)


def test_testing_surface() -> None:
    assert crewline.testing.__all__ == TESTING == sorted(TESTING)
    assert all(hasattr(crewline.testing, name) for name in TESTING)
