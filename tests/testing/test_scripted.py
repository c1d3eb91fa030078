"""The scripted model: deterministic replies, tool calls and failures through the real gateway."""

from __future__ import annotations

import pydantic
import pytest

from crewline.errors import AuthError, ProviderUnavailable, RateLimited
from crewline.models import Gateway, ModelResponse, ModelsConfig, ToolCall
from crewline.testing import ScriptedModel, tool_call


class Label(pydantic.BaseModel):
    label: str


async def test_replies_in_order_and_records_requests() -> None:
    model = ScriptedModel("first", tool_call("lookup", {"id": 1}), {"label": "x"})
    gw = Gateway.for_testing(model)
    assert (await gw.complete(messages="one")).text == "first"
    reply = await gw.complete(messages="two")
    assert reply.tool_calls == (ToolCall("call_lookup", "lookup", {"id": 1}),)
    assert (await gw.complete(messages="three", output=Label)).output == Label(label="x")
    assert [r.messages[-1].text for r in model.requests] == ["one", "two", "three"]
    assert model.remaining == 0
    await gw.aclose()


async def test_failures_are_raised_and_retried() -> None:
    model = ScriptedModel(RateLimited("slow down", retry_after=0.0), "after retry")
    slept: list[float] = []

    async def sleep(s: float) -> None:
        slept.append(s)

    gw = Gateway.for_testing(model, sleep=sleep)
    reply = await gw.complete(messages="hi")
    assert (reply.text, reply.attempts, slept) == ("after retry", 2, [0.0])
    model.add(AuthError)
    with pytest.raises(AuthError):
        await gw.complete(messages="hi")
    await gw.aclose()


async def test_callable_items_and_default() -> None:
    model = ScriptedModel(lambda req: f"you said {req.messages[-1].text}", default="fallback")
    gw = Gateway.for_testing(model)
    assert (await gw.complete(messages="ping")).text == "you said ping"
    assert (await gw.complete(messages="again")).text == "fallback"
    await gw.aclose()
    shaped = Gateway.for_testing(ScriptedModel())  # no script left: a schema-shaped example answers
    assert (await shaped.complete(messages="shape", output=Label)).output == Label(label="x")
    await shaped.aclose()


async def test_streaming_and_embeddings() -> None:
    gw = Gateway.for_testing(ScriptedModel("a few streamed words"))
    stream = gw.stream(messages="go")
    assert [c.text async for c in stream if c.text] == ["a", " few", " streamed", " words"]
    assert stream.response is not None and stream.response.text == "a few streamed words"
    out = await gw.embed(["x", "y"])
    assert len(out.vectors) == 2
    await gw.aclose()


async def test_scripted_model_behind_an_alias_with_fallback() -> None:
    primary = ScriptedModel(ProviderUnavailable("down"), ProviderUnavailable("down"), name="primary")
    backup = ScriptedModel("from backup", name="backup")
    config = ModelsConfig.parse({"aliases": {"smart": ["primary/m", "backup/m"]}, "retry": {"attempts": 2}})

    async def sleep(s: float) -> None:
        pass

    gw = Gateway(config, adapters={"primary": primary, "backup": backup}, sleep=sleep)
    reply = await gw.complete("smart", "hi")
    assert (reply.text, reply.provider, reply.attempts) == ("from backup", "backup", 3)
    await gw.aclose()


async def test_model_response_items_pass_through() -> None:
    canned = ModelResponse(text="canned", model="x")
    gw = Gateway.for_testing(ScriptedModel(canned))
    assert (await gw.complete(messages="hi")).text == "canned"
    await gw.aclose()
