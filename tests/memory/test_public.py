"""The public surface of ``crewline.memory``, pinned."""

from __future__ import annotations

import crewline.memory


def test_public_names() -> None:
    assert set(crewline.memory.__all__) == {
        "GLOBAL",
        "OPERATOR",
        "ConversationWindow",
        "Document",
        "Embedder",
        "GatewayEmbedder",
        "Hit",
        "IngestReport",
        "Item",
        "LocalEmbedder",
        "MemoryStore",
        "Message",
        "RollbackReport",
        "RunMemory",
        "Snapshot",
        "Stats",
        "Version",
        "Written",
        "embedder_from_config",
        "gateway_embedder",
        "gateway_summariser",
        "validate_scope",
    }
    for name in crewline.memory.__all__:
        assert getattr(crewline.memory, name) is not None
