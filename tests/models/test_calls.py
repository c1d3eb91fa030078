"""Calls as objects: ``complete(CompletionRequest, CallOptions)`` and the keyword form are one call, streams
and embeddings take the same options, and a failed call's error says how many attempts it made."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from crewline.errors import InvalidInput, ProviderUnavailable
from crewline.models import Gateway, ModelRequest, user
from crewline.models.calls import CallOptions, CompletionRequest
from crewline.store import Database
from crewline.testing import FakeProvider, Fault, ScriptedModel


class Label(BaseModel):
    label: str


def _rows(db: Database) -> list[tuple[Any, ...]]:
    return db.query(
        lambda c: c.all(
            "SELECT kind, requested, run_id, step, workflow, attempts FROM model_calls ORDER BY id"
        )
    )


async def test_objects_and_keywords_make_the_same_call(db: Database) -> None:
    gw = Gateway.for_testing(ScriptedModel({"label": "bug"}, {"label": "bug"}), db, wait_for_records=True)
    options = CallOptions(budget_scope={"workflow": "triage"}, run_id="run-1", step=2)
    asked = CompletionRequest(messages=[user("Classify")], output=Label, max_tokens=20, temperature=0.5)
    by_objects = await gw.complete(asked, options)
    by_keywords = await gw.complete(
        None,
        [user("Classify")],
        output=Label,
        max_tokens=20,
        temperature=0.5,
        budget_scope={"workflow": "triage"},
        run_id="run-1",
        step=2,
    )
    assert by_objects.output == by_keywords.output == Label(label="bug")
    rows = _rows(db)
    assert rows[0] == rows[1] == ("complete", "test/scripted", "run-1", 2, "triage", 1)
    await gw.aclose()


async def test_a_model_request_is_checked_like_any_other() -> None:
    gw = Gateway.for_testing(ScriptedModel("hi"))
    reply = await gw.complete(ModelRequest("test/scripted", (user("hello"),)), CallOptions(cache=False))
    assert reply.text == "hi"
    with pytest.raises(InvalidInput, match="top_p"):
        await gw.complete(ModelRequest("", (user("hello"),), top_p=3.0))
    await gw.aclose()


async def test_streams_and_embeddings_take_options(db: Database) -> None:
    gw = Gateway.for_testing(ScriptedModel("streamed words"), db, wait_for_records=True)
    options = CallOptions(budget_scope={"workflow": "digest"}, run_id="run-2", step=5)
    stream = gw.stream(CompletionRequest(messages="go"), options)
    assert await stream.text() == "streamed words"
    reply = await gw.embed(["a", "b"], options=options)
    assert len(reply.vectors) == 2
    assert [row[0] for row in _rows(db)] == ["stream", "embed"]
    assert all(row[2:5] == ("run-2", 5, "digest") for row in _rows(db))
    await gw.aclose()


async def test_what_a_stream_or_embedding_cannot_do_is_refused() -> None:
    gw = Gateway.for_testing(ScriptedModel())
    with pytest.raises(InvalidInput, match="a stream does not take escalate"):
        gw.stream(CompletionRequest(messages="go"), CallOptions(escalate=True))
    with pytest.raises(InvalidInput, match="cannot validate output"):
        gw.stream(CompletionRequest(messages="go", output=Label))
    with pytest.raises(InvalidInput, match="an embedding does not take cache"):
        await gw.embed("text", options=CallOptions(cache=True))
    with pytest.raises(TypeError, match="output"):
        gw.stream("test/scripted", "go", output=Label)  # type: ignore[call-overload]
    await gw.aclose()


async def test_objects_and_keywords_do_not_mix() -> None:
    gw = Gateway.for_testing(ScriptedModel())
    with pytest.raises(TypeError, match="beside a request object"):
        await gw.complete(CompletionRequest(messages="go"), max_tokens=5)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="multiple values for argument 'model'"):
        await gw.complete("test/scripted", "go", model="test/scripted")  # type: ignore[call-overload]
    await gw.aclose()


def test_call_objects_are_frozen_and_default_every_field() -> None:
    with pytest.raises(AttributeError):
        CallOptions().run_id = "x"  # type: ignore[misc]
    assert CompletionRequest().model is None and CallOptions().escalate is False


async def test_the_error_says_how_many_attempts_the_route_made(
    fake: FakeProvider, make_gateway: Any, db: Database
) -> None:
    gw = make_gateway({"retry": {"attempts": 3}}, db=db, wait_for_records=True)
    fake.fault(Fault.http(503, "down", times=10))
    with pytest.raises(ProviderUnavailable) as info:
        await gw.complete("openai/m", "hi")
    with pytest.raises(ProviderUnavailable) as streamed:
        await gw.stream("anthropic/m", "hi").text()  # another deployment: its breaker is still closed
    assert info.value.tries == streamed.value.tries == 3
    assert not hasattr(info.value, "_crewline_attempts")
    await gw.flush()
    assert [row[5] for row in _rows(db)] == [3, 3]
