"""Structured output: validation, re-asks, invalid-output errors with every attempt, tier escalation."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest

from crewline.errors import InvalidInput, InvalidOutput
from crewline.models import Gateway, ModelsConfig
from crewline.testing import FakeProvider, ScriptedModel


class Triage(pydantic.BaseModel):
    label: str
    urgent: bool


async def test_reask_with_the_validation_error(fake: FakeProvider, make_gateway: Any) -> None:
    gw = make_gateway({"prices": {"openai/m": {"input": 1.0, "output": 1.0}}})
    fake.reply(json={"label": "billing"}, input_tokens=10, output_tokens=5)
    fake.reply(json={"label": "billing", "urgent": True}, input_tokens=20, output_tokens=5)
    reply = await gw.complete("openai/m", "triage this", output=Triage)
    assert reply.output == Triage(label="billing", urgent=True)
    assert reply.usage.input_tokens == 30 and reply.attempts == 2
    assert reply.cost == pytest.approx(40 / 1_000_000)
    reask = fake.requests[-1].body["messages"]
    assert "urgent" in reask[-1]["content"] and reask[-2]["role"] == "assistant"


async def test_invalid_output_carries_every_attempt(fake: FakeProvider, make_gateway: Any) -> None:
    gw = make_gateway({"prices": {"openai/m": {"input": 1.0, "output": 1.0}}})
    fake.reply("not json at all", times=3)
    with pytest.raises(InvalidOutput) as info:
        await gw.complete("openai/m", "triage", output=Triage, output_retries=2)
    attempts = info.value.attempts
    assert len(attempts) == 3 and all(a["cost"] > 0 and a["usage"].output_tokens for a in attempts)
    assert "3 attempt" in str(info.value)


async def test_json_in_prose_or_fence_is_found() -> None:
    gw = Gateway.for_testing(
        ScriptedModel(
            'Sure! ```json\n{"label": "a", "urgent": false}\n```',
            'Here it is: {"label": "b", "urgent": true} hope it helps',
        )
    )
    assert (await gw.complete(messages="x", output=Triage)).output.label == "a"
    assert (await gw.complete(messages="x", output=Triage)).output.label == "b"
    await gw.aclose()


async def test_output_type_without_json_schema_fails_before_sending() -> None:
    model = ScriptedModel()
    gw = Gateway.for_testing(model)

    class Opaque:
        pass

    with pytest.raises(InvalidInput, match="JSON schema"):
        await gw.complete(messages="x", output=Opaque)
    with pytest.raises(InvalidInput, match="object type"):
        await gw.complete(messages="x", output=int)
    assert model.requests == []
    await gw.aclose()


def _tiered(cheap: ScriptedModel, strong: ScriptedModel) -> Gateway:
    config = ModelsConfig.parse(
        {
            "tiers": {"order": ["cheap", "strong"], "cheap": "c/m", "strong": "s/m"},
            "default": "cheap",
            "output_retries": 1,
        }
    )
    return Gateway(config, adapters={"c": cheap, "s": strong})


async def test_escalates_to_next_tier_after_failed_reasks() -> None:
    cheap, strong = ScriptedModel("nope", "still nope"), ScriptedModel({"label": "x", "urgent": True})
    gw = _tiered(cheap, strong)
    reply = await gw.complete("cheap", "x", output=Triage, escalate=True)
    assert reply.provider == "s" and len(cheap.requests) == 2
    await gw.aclose()


async def test_no_escalation_unless_asked() -> None:
    gw = _tiered(ScriptedModel("nope", "still nope"), ScriptedModel())
    with pytest.raises(InvalidOutput):
        await gw.complete("cheap", "x", output=Triage)
    await gw.aclose()


async def test_confidence_check_escalates_and_top_tier_answer_stands() -> None:
    gw = _tiered(ScriptedModel("unsure"), ScriptedModel("also unsure"))
    reply = await gw.complete("cheap", "x", confidence=lambda r: r.text == "sure")
    assert reply.provider == "s" and reply.text == "also unsure"
    await gw.aclose()


async def test_prompted_json_for_adapters_without_native_mode() -> None:
    model = ScriptedModel({"label": "x", "urgent": False})
    model.native_schema = False  # type: ignore[misc]
    gw = Gateway.for_testing(model)
    await gw.complete(messages="x", output=Triage)
    sent = model.requests[0]
    assert sent.response_schema is None and "JSON schema" in sent.messages[0].text
    await gw.aclose()
