"""Events from real work (a model call on the fake provider, a step, a memory search, a review) and the
Prometheus metrics they become, read back through the text format a scraper parses."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from crewline import App, Context, Settings
from crewline.models import Gateway
from crewline.observe import (
    Event,
    ModelCallEvent,
    RetrievalEvent,
    ReviewEvent,
    RunEvent,
    StepEvent,
)
from crewline.testing import FakeProvider, ScriptedModel

from ..flows._drive import drive, step_once

MODELS = {
    "default": "cheap",
    "providers": {
        "fake": {"format": "openai", "base_url": "http://127.0.0.1:9/v1", "api_key_env": "FAKE_KEY"}
    },
    "aliases": {"cheap": "fake/mid"},
    "prices": {"fake/mid": {"input": 1000.0, "output": 1000.0}},  # $0.001 a token
    "retry": {"attempts": 1},
}


class Recorder:
    def __init__(self) -> None:
        self.seen: list[Event] = []

    def observe(self, event: Event) -> None:
        self.seen.append(event)

    def of(self, kind: type[Any]) -> list[Any]:
        return [e for e in self.seen if isinstance(e, kind)]


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeProvider]:
    monkeypatch.setenv("FAKE_KEY", "sk-test")
    with FakeProvider(api_key="sk-test") as server:
        yield server


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of the exposition text, keyed by (name, labels)."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    """The sum over the samples of ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in found.items() if n == name and wanted <= ls)


async def test_a_run_reports_its_call_steps_search_and_review_and_they_become_metrics(
    db_url: str, fake: FakeProvider, tmp_path: Path
) -> None:
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "greet.md").write_text("---\nparams: [name]\n---\nSay hello to {{ name }}.\n")
    models = {**MODELS, "providers": {"fake": {**MODELS["providers"]["fake"], "base_url": fake.url + "/v1"}}}
    settings = Settings(database_url=db_url, project_dir=tmp_path, sections={"models": models})
    app = App(settings=settings)
    seen = Recorder()
    app.observers.add(seen)
    metrics = app.metrics
    await app.memory.remember("Ada prefers email", scope="customer:ada")
    fake.reply("Hello, Ada!", input_tokens=10, output_tokens=5)

    @app.workflow()
    async def greet(ctx: Context, name: str) -> str:
        hits = await ctx.memory.search("how to contact", scope=["customer:ada"], k=3)
        text: str = await ctx.llm(prompt="greet", input={"name": name})
        await ctx.step(lambda: len(hits), name="count")
        await ctx.approve("send greeting", preview={"text": text}, risk="high")
        return text

    try:
        rid = await app.start(greet, "Ada")
        await step_once(app, "w1")
        request = (await app.reviews.list())[0]
        await app.reviews.approve(request.id, by="owner")
        assert (await drive(app, rid)).status == "completed"

        call = seen.of(ModelCallEvent)
        assert len(call) == 1 and call[0].run_id == rid and call[0].workflow == "greet"
        assert call[0].prompt is not None and call[0].prompt.startswith("greet@")
        assert (call[0].model, call[0].input_tokens, call[0].output_tokens) == ("mid", 10, 5)
        assert call[0].cost == pytest.approx(0.015) and call[0].error_type is None
        steps = [(e.kind, e.status) for e in seen.of(StepEvent)]
        # the search and the llm step ran once, live; the replay after the approval reported nothing
        assert steps == [
            ("step", "done"),
            ("llm", "done"),
            ("step", "done"),
            ("approval", "waiting"),
            ("approval", "done"),
        ]
        assert [e.status for e in seen.of(RunEvent)] == ["started", "parked", "resumed", "completed"]
        reviews = seen.of(ReviewEvent)
        assert [(e.kind, e.status) for e in reviews] == [("approval", "pending"), ("approval", "approved")]
        assert reviews[1].waited_s is not None and reviews[1].waited_s >= 0
        searches = seen.of(RetrievalEvent)
        assert [(e.scopes, e.hits) for e in searches] == [(("customer:ada",), 1)]

        found = samples(metrics.render().decode())
        gen_ai = {
            "gen_ai_operation_name": "chat",
            "gen_ai_request_model": "cheap",
            "gen_ai_provider_name": "fake",
        }
        assert value(found, "gen_ai_client_operation_duration_seconds_count", error_type="", **gen_ai) == 1
        assert value(found, "gen_ai_client_token_usage_sum", gen_ai_token_type="input", **gen_ai) == 10
        assert value(found, "gen_ai_client_token_usage_sum", gen_ai_token_type="output", **gen_ai) == 5
        assert (
            value(found, "crewline_model_calls_total", model="fake/mid", workflow="greet", status="ok") == 1
        )
        assert value(
            found, "crewline_model_cost_usd_total", model="fake/mid", workflow="greet"
        ) == pytest.approx(0.015)
        assert value(found, "crewline_step_duration_seconds_count", workflow="greet", kind="llm") == 1
        assert value(found, "crewline_step_duration_seconds_count", kind="approval", status="waiting") == 1
        assert value(found, "crewline_memory_searches_total") == 1
        assert value(found, "crewline_memory_search_hits_total") == 1
        assert value(found, "crewline_reviews_total", kind="approval", status="approved") == 1
        assert value(found, "crewline_run_changes_total", workflow="greet", status="completed") == 1
        # the gauges are read from the database
        assert value(found, "crewline_runs", state="completed") == 1
        assert value(found, "crewline_review_queue_size") == 0
        assert not any(rid in str(labels) for _, labels in found)  # no run ids as labels
    finally:
        await app.aclose()


async def test_gauges_show_due_runs_pending_reviews_and_budget_use(db_url: str) -> None:
    models = {**MODELS, "budgets": {"day": 0.1}}
    app = App(settings=Settings(database_url=db_url, sections={"models": models}))

    @app.workflow(queue="mail")
    async def ask(ctx: Context) -> bool:
        return (await ctx.approve("send", preview=None, risk="high")).approved

    try:
        waiting = await app.start(ask)
        await step_once(app, "w1")
        await app.start(ask)  # pending, due, in queue "mail"
        await app.start(ask)
        ledger = app.models.ledger
        assert ledger is not None
        ledger.set_limit("key:k1", 2.0)
        await app.db.write(
            lambda c: c.execute("UPDATE model_budgets SET spent_nusd = 500000000 WHERE scope = 'key:k1'")
        )
        found = samples(app.metrics.render().decode())
        assert value(found, "crewline_runs", state="waiting") == 1
        assert value(found, "crewline_runs", state="pending") == 2
        assert value(found, "crewline_queue_depth", queue="mail") == 2
        assert value(found, "crewline_queue_oldest_age_seconds", queue="mail") >= 0
        assert value(found, "crewline_review_queue_size") == 1
        assert value(found, "crewline_review_oldest_age_seconds") >= 0
        assert value(found, "crewline_budget_use_ratio", scope="key:k1") == pytest.approx(0.25)
        assert not any("run:" in str(labels) for _, labels in found) and waiting
    finally:
        await app.aclose()


async def test_a_gateway_built_by_hand_reports_through_the_app(db_url: str) -> None:
    app = App(db_url)
    seen = Recorder()
    app.observers.add(seen)
    app.engine.models = Gateway.for_testing(ScriptedModel("one"), app.db, on_call=app.observe_call)
    metrics = app.metrics
    try:
        reply = await app.models.complete(messages="hi")
        assert reply.text == "one"
        (event,) = seen.of(ModelCallEvent)
        assert (event.provider, event.requested, event.prompt, event.streamed) == (
            "test",
            "test/scripted",
            None,
            False,
        )
        found = samples(metrics.render().decode())
        assert (
            value(found, "crewline_model_calls_total", model="test/scripted", workflow="", status="ok") == 1
        )
    finally:
        await app.aclose()
