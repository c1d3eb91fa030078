"""OpenTelemetry spans of real runs, received over OTLP/HTTP by a real (loopback) collector endpoint.

The receiver (``SpanReceiver`` in tests/observe/_receivers.py) is a small HTTP server that accepts
``POST /v1/traces`` and decodes the protobuf ``ExportTraceServiceRequest`` with opentelemetry-proto, as
a collector would. The model is the fake provider on loopback; the run parks on an event and is resumed
by a second App on the same database, as another worker process would.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from crewline import App, Context, Settings, tool
from crewline.cli.config import check_project
from crewline.errors import ConfigError
from crewline.models import Gateway, ModelsConfig
from crewline.observe.trace_config import TraceSettings
from crewline.testing import FakeProvider
from tests.flows._drive import drive, step_once
from tests.observe._receivers import SpanReceiver, collector

__all__ = ["collector"]

SECRET = "collector-token-5f2a"


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    with FakeProvider(api_key="sk-test") as server:
        yield server


def _models(url: str) -> ModelsConfig:
    return ModelsConfig.parse(
        {
            "default": "cheap",
            "providers": {"fake": {"format": "openai", "base_url": url + "/v1", "api_key_env": "FAKE_KEY"}},
            "aliases": {"cheap": "fake/mid"},
            "prices": {"fake/mid": {"input": 1000.0, "output": 1000.0}},
            "retry": {"attempts": 1},
        }
    )


@tool
async def lookup_order(order_id: str) -> dict[str, Any]:
    return {"id": order_id, "status": "shipped"}


def _app(db_url: str, observe: dict[str, Any], fake: FakeProvider) -> App:
    app = App(settings=Settings().with_(database_url=db_url, sections={"observe": observe}))
    app.engine.models = Gateway(
        _models(fake.url), app.db, environ={"FAKE_KEY": "sk-test"}, on_call=app.observe_call
    )

    @app.workflow()
    async def answer(ctx: Context, order_id: str) -> dict[str, Any]:
        order = await ctx.tool(lookup_order, order_id=order_id)
        hits = await ctx.memory.search("when does my order arrive", scope=["kb"], k=2)
        await ctx.wait_for("go")
        reply = await ctx.llm(messages=f"Order {order['id']} is {order['status']}; {hits[0].text}")
        return {"reply": reply}

    return app


async def _one_run(db_url: str, observe: dict[str, Any], fake: FakeProvider) -> str:
    """Start a run in one App until it parks, and finish it in another on the same database."""
    first = _app(db_url, observe, fake)
    await first.memory.remember("Orders arrive within two days", scope="kb")
    rid = await first.start("answer", "o-1")
    await step_once(first, "worker-a")
    assert (await first.get_run(rid)).status == "waiting"
    await first.aclose()  # the export queue is flushed: this "process" is gone

    second = _app(db_url, observe, fake)
    await second.send_event(rid, "go")
    run = await drive(second, rid)
    assert run.status == "completed", run.error
    await second.aclose()
    return rid


async def test_a_run_resumed_elsewhere_is_one_trace_of_gen_ai_spans(
    db_url: str, collector: SpanReceiver, fake: FakeProvider
) -> None:
    rid = await _one_run(db_url, {"otlp_endpoint": collector.url, "service_name": "shop"}, fake)
    spans = [s for s in collector.spans if s["attrs"].get("crewline.run.id") == rid]
    by_name = {s["name"]: s for s in spans}

    run = by_name["invoke_workflow answer"]
    assert run["parent"] is None and run["service"] == "shop"
    assert run["attrs"]["gen_ai.operation.name"] == "invoke_workflow"
    assert run["attrs"]["gen_ai.agent.name"] == "answer"
    assert run["attrs"]["crewline.run.status"] == "completed"
    stored = (await App(db_url).get_run(rid)).trace_parent
    assert stored is not None and stored.split("-")[1:3] == [run["trace"], run["id"]]
    assert {s["trace"] for s in spans} == {run["trace"]}, "one trace across both processes"

    tool_span = by_name["execute_tool lookup_order"]
    assert tool_span["attrs"]["gen_ai.operation.name"] == "execute_tool"
    assert tool_span["attrs"]["gen_ai.tool.name"] == "lookup_order"
    search_step = by_name["step memory.search"]
    waiting = [s for s in spans if s["attrs"].get("crewline.step.kind") == "event"]
    llm_step = next(s for s in spans if s["attrs"].get("crewline.step.kind") == "llm")
    for step in (tool_span, search_step, llm_step, *waiting):
        assert step["parent"] == run["id"]
        assert run["start"] <= step["start"] <= step["end"] <= run["end"]

    retrieval = by_name["retrieval"]
    assert retrieval["parent"] == search_step["id"]
    assert retrieval["attrs"]["gen_ai.operation.name"] == "retrieval"
    assert retrieval["attrs"]["gen_ai.retrieval.top_k"] == 2
    assert retrieval["attrs"]["crewline.retrieval.hits"] == 1
    assert retrieval["attrs"]["crewline.memory.scopes"] == ["kb"]

    chat = by_name["chat mid"]
    assert chat["parent"] == llm_step["id"]
    attrs = chat["attrs"]
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.provider.name"] == "fake"
    assert attrs["gen_ai.request.model"] == "cheap"
    assert attrs["gen_ai.response.model"] == "mid"
    assert attrs["gen_ai.usage.input_tokens"] > 0 and attrs["gen_ai.usage.output_tokens"] > 0
    assert attrs["crewline.cost_usd"] > 0 and attrs["crewline.attempts"] == 1
    assert attrs["crewline.cache_hit"] is False
    assert "gen_ai.input.messages" not in attrs and "gen_ai.output.messages" not in attrs


async def test_content_is_captured_only_when_asked_and_headers_come_from_the_environment(
    sqlite_url: str, collector: SpanReceiver, fake: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTLP_HEADERS", f"x-api-key={SECRET}")
    observe = {"otlp_endpoint": collector.url, "capture_content": True, "otlp_headers_env": "OTLP_HEADERS"}
    rid = await _one_run(sqlite_url, observe, fake)
    [chat] = [s for s in collector.spans if s["name"].startswith("chat ")]
    assert chat["attrs"]["crewline.run.id"] == rid
    assert "Order o-1 is shipped" in chat["attrs"]["gen_ai.input.messages"]
    assert '"role": "assistant"' in chat["attrs"]["gen_ai.output.messages"]
    assert all(h.get("x-api-key") == SECRET for h in collector.headers)
    assert all(SECRET not in str(s["attrs"]) and "sk-test" not in str(s["attrs"]) for s in collector.spans)


@pytest.mark.parametrize(
    ("observe", "says"),
    [
        ({"otlp_endpoint": "localhost:4318"}, "[observe] otlp_endpoint must be an http(s) URL"),
        ({"otlp_endpoint": "http://u:pw@localhost:4318"}, "must not hold credentials"),
        ({"otlp_endpoint": "http://localhost:4318", "capture_content": "yes"}, "capture_content must be"),
        ({"otlp_endpoint": "http://localhost:4318", "otlp_headers_env": "NOT_SET_HERE"}, "NOT_SET_HERE"),
        ({"otlp_endpoint": "http://localhost:4318", "otlp_headers_env": "BAD_HEADERS"}, "has no 'name='"),
    ],
)
def test_bad_settings_are_configuration_errors_that_name_the_key(observe: dict[str, Any], says: str) -> None:
    env = {"BAD_HEADERS": f"{SECRET}"}
    with pytest.raises(ConfigError) as caught:
        TraceSettings.from_section(observe, env)
    assert says in str(caught.value) and SECRET not in str(caught.value)


def test_config_check_reports_the_observe_section(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "crewline.toml").write_text('[observe]\notlp_endpoint = "ftp://x"\ncapture_contents = true\n')
    report = check_project({"CREWLINE_PROJECT": str(tmp_path)})
    assert any("[observe] otlp_endpoint must be an http(s) URL" in e for e in report.errors)
    assert any("did you mean 'capture_content'" in e for e in report.errors)


def test_the_endpoint_gets_the_traces_path_once() -> None:
    assert (
        TraceSettings.from_section({"otlp_endpoint": "http://c:4318/"}, {}).endpoint
        == "http://c:4318/v1/traces"
    )
    given = TraceSettings.from_section({"otlp_endpoint": "https://c/v1/traces"}, {})
    assert given.endpoint == "https://c/v1/traces"
