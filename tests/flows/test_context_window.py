"""Oversized input: ``ctx.llm`` keeps a request inside the model's context window by policy and records
what it cut; the agent loop compresses old turns. The model is a ScriptedModel, which keeps every request
it received, so the tests measure what reached it."""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from typing import Any

import pytest

from crewline import App, ConfigError, Context, Settings
from crewline.flows.agent import COMPRESS_PROMPT
from crewline.flows.fit import room
from crewline.models import Gateway, ModelsConfig
from crewline.models.tokens import estimate_messages_tokens, estimate_text_tokens
from crewline.testing import ScriptedModel, tool_call

from ._drive import CrashPlan, drive

WINDOW = 8192  # the main model's, as the local SmolLM2's
SMALL_WINDOW = 4096  # the cheap tier's, which writes the summaries
MAX_TOKENS = 256


def email_thread(size: int = 2_000_000) -> str:
    """A long thread of replies quoting each other, with amounts and dates, about ``size`` characters."""
    rng = random.Random(7)
    parts = ["From: first@example.com\nSubject: Invoice 4411 is wrong\n\nFIRST-MESSAGE-MARKER\n"]
    n = 0
    while sum(map(len, parts)) < size:
        n += 1
        amount = rng.randint(10, 99999)
        parts.append(
            f"\n> On 2026-0{n % 9 + 1}-1{n % 9} someone wrote:\n> the invoice says {amount}.00 EUR, "
            "not what we agreed. Could you send a corrected one before Friday? Thanks, Alice\n"
        )
    parts.append("\nLAST-MESSAGE-MARKER: please confirm by Friday.\n")
    return "".join(parts)


def models_config(**extra: Any) -> ModelsConfig:
    return ModelsConfig.parse(
        {
            "default": "strong",
            "max_tokens": MAX_TOKENS,
            "tiers": {"order": ["cheap", "strong"], "cheap": "test/small", "strong": "test/big"},
            "prices": {"test/big": {"context": WINDOW}, "test/small": {"context": SMALL_WINDOW}},
            **extra,
        }
    )


@pytest.fixture
def model() -> ScriptedModel:
    return ScriptedModel()


@pytest.fixture
async def app(db_url: str, model: ScriptedModel) -> Any:
    a = App(settings=Settings().with_(database_url=db_url))
    a.engine.models = Gateway.for_testing(model, a.db, config=models_config(), wait_for_records=True)
    yield a
    await a.aclose()


def sent_tokens(model: ScriptedModel, i: int) -> int:
    return estimate_messages_tokens(model.requests[i].messages)


def test_the_gateway_knows_context_windows_beside_the_prices() -> None:
    gateway = Gateway(ModelsConfig())
    # SmolLM2 could take 8192 tokens, but the bundled llama.cpp server is started with n_ctx 2048.
    assert gateway.prices.context("local", "smollm2") == 8192
    assert gateway.context_window("local") == 2048
    larger = ModelsConfig.parse({"providers": {"local": {"format": "local", "options": {"n_ctx": 8192}}}})
    assert Gateway(larger).context_window("local") == 8192
    assert gateway.prices.context("openai", "gpt-4o-mini-2024-07-18") == 128000
    assert gateway.context_window("anthropic/claude-sonnet-4-5") == 200000
    assert gateway.context_window("vllm/whatever") is None
    # A configured context alone keeps the shipped price; a configured price keeps the shipped context.
    config = ModelsConfig.parse(
        {"prices": {"openai/gpt-4o": {"context": 64000}, "openai/gpt-4o-mini": {"input": 1, "output": 2}}}
    )
    table = Gateway(config).prices
    assert table.context("openai", "gpt-4o") == 64000
    assert table.lookup("openai", "gpt-4o") is not None and table.lookup("openai", "gpt-4o").input == 2.5
    assert table.context("openai", "gpt-4o-mini") == 128000
    # A fallback chain must fit its smallest member.
    chain = ModelsConfig.parse({"aliases": {"both": ["openai/gpt-4o", "anthropic/claude-haiku-4-5"]}})
    assert Gateway(chain).context_window("both") == 128000


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"context": 0}, "context must be a positive integer"),
        ({"context": "big"}, "context must be a positive integer"),
        ({"input": 1, "context": 10}, "needs input and output"),
        ({}, "or a context"),
    ],
)
def test_a_bad_context_in_config_names_the_key(entry: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ModelsConfig.parse({"prices": {"x/y": entry}})


def test_overflow_policy_in_config_is_checked() -> None:
    assert ModelsConfig.parse({"overflow": "summarize"}).overflow == "summarize"
    with pytest.raises(ConfigError, match="overflow must be one of truncate, summarize, fail"):
        ModelsConfig.parse({"overflow": "shrink"})


def test_the_fit_estimate_errs_high_where_tokenizers_split_finely() -> None:
    # Byte-level BPE tokenizers (SmolLM2, GPT, Llama) give each digit a token and non-ASCII its bytes.
    assert estimate_text_tokens("1234567890") == 10
    assert estimate_text_tokens("🎉" * 10) == 40
    assert estimate_text_tokens("invoice ") == 4


async def test_a_2mb_email_thread_is_truncated_into_the_window(app: App, model: ScriptedModel) -> None:
    thread = email_thread()
    model.add("Alice wants a corrected invoice by Friday.")

    @app.workflow()
    async def triage(ctx: Context) -> str:
        reply: str = await ctx.llm(
            messages=[{"role": "system", "content": "Triage."}, {"role": "user", "content": thread}]
        )
        return reply

    rid = await app.start(triage)
    run = await drive(app, rid)
    assert run.status == "completed", run.error
    assert sent_tokens(model, 0) <= room(WINDOW, MAX_TOKENS)
    sent = model.requests[0].messages[1].text
    assert sent.startswith("From: first@example.com") and "FIRST-MESSAGE-MARKER" in sent
    assert sent.rstrip().endswith("please confirm by Friday.")
    cut = (await app.steps(rid))[0].output["cut"]
    assert cut["policy"] == "truncate" and cut["window"] == WINDOW
    assert cut["messages"][0]["index"] == 1 and cut["messages"][0]["role"] == "user"
    assert cut["messages"][0]["chars_before"] == len(thread)
    marker = f"\n[{cut['chars_cut']} characters cut]\n"
    assert marker in sent and cut["chars_cut"] == len(thread) - len(sent) + len(marker)
    assert cut["messages"][0]["chars_cut"] == cut["chars_cut"] and cut["tokens_cut"] > 0
    assert cut["estimated_tokens_after"] <= cut["limit"] < cut["estimated_tokens_before"]


async def test_summarize_puts_a_recorded_summary_in_place_of_the_cut(app: App, model: ScriptedModel) -> None:
    thread = email_thread(300_000)
    model.add("SUMMARY: the amounts disputed, a corrected invoice asked for.", "Noted.")
    runs: list[str] = []

    @app.workflow(overflow="summarize")
    async def triage(ctx: Context) -> str:
        runs.append("ran")
        reply: str = await ctx.llm(messages=thread)
        return reply

    # crash between the summary and the call, then after the call
    app.engine.crash_hook = CrashPlan([("after_step_commit", 1), ("after_step_commit", 2)])
    rid = await app.start(triage)
    run = await drive(app, rid)
    assert run.status == "completed" and run.output == "Noted.", run.error
    assert len(runs) == 3
    assert len(model.requests) == 2  # the replay summarised nothing and called nothing again
    assert model.models == ["small", "big"]
    assert sent_tokens(model, 0) <= room(SMALL_WINDOW, 512)  # the summariser's input fits its own window
    assert sent_tokens(model, 1) <= room(WINDOW, MAX_TOKENS)
    assert "SUMMARY: the amounts disputed" in model.requests[1].messages[0].text
    steps = await app.steps(rid)
    assert [s.name for s in steps] == ["llm:summarize", "llm"]
    assert steps[0].output["cut"]["policy"] == "truncate"
    assert steps[1].output["cut"]["policy"] == "summarize"
    assert steps[1].output["cut"]["messages"][0]["chars_before"] == len(thread)


async def test_fail_names_the_size_and_the_limit_and_calls_no_model(app: App, model: ScriptedModel) -> None:
    @app.workflow(overflow="fail")
    async def triage(ctx: Context) -> str:
        reply: str = await ctx.llm(messages=email_thread(100_000))
        return reply

    rid = await app.start(triage)
    run = await drive(app, rid)
    assert run.status == "failed"
    assert model.requests == []
    step = (await app.steps(rid))[0]
    assert step.status == "failed" and step.error is not None
    assert step.error["type"] == "ContextTooLong"
    message = step.error["message"]
    assert f"context window of {WINDOW} tokens" in message and "about " in message
    assert f"leaves {room(WINDOW, MAX_TOKENS)} for input" in message


@dataclass(frozen=True)
class FakeHit:
    id: str
    text: str
    score: float


async def test_memory_hits_are_dropped_lowest_score_first_before_text_is_cut(
    app: App, model: ScriptedModel
) -> None:
    hits = [
        FakeHit(f"m{i}", f"fact {i}: " + "x" * 3000, score) for i, score in enumerate([0.9, 0.2, 0.5, 0.1])
    ]
    question = "What does the customer want? " + "y" * 8000

    @app.workflow()
    async def answer(ctx: Context) -> str:
        reply: str = await ctx.llm(messages=question, memory=hits)
        return reply

    rid = await app.start(answer)
    assert (await drive(app, rid)).status == "completed"
    sent = model.requests[0].messages
    assert sent[-1].text == question  # no text was cut
    memory = sent[0].text
    assert memory.index("fact 0") < memory.index("fact 2")  # best first
    assert "fact 1" not in memory and "fact 3" not in memory
    cut = (await app.steps(rid))[0].output["cut"]
    assert [d["id"] for d in cut["memory_dropped"]] == ["m3", "m1"]
    assert cut["messages"] == [] and cut["chars_cut"] == 0


async def test_the_agent_compresses_old_turns_as_the_conversation_nears_the_window(
    app: App, model: ScriptedModel
) -> None:
    pages = {str(i): f"page {i}: " + "z" * 6000 for i in range(6)}

    def read(page: str) -> str:
        """Read a page of the report."""
        return pages[page]

    turns = itertools.count()

    def reply(request: Any) -> Any:
        if request.messages[0].text == COMPRESS_PROMPT:
            return "EARLIER: pages were read"
        page = next(turns)
        return tool_call("read", {"page": str(page)}, id=f"c{page}") if page < 6 else "done"

    model.default = reply

    @app.workflow()
    async def research(ctx: Context) -> str:
        result = await ctx.agent("Read every page", tools=[read], max_steps=10)
        return result.output

    crash = app.engine.crash_hook = CrashPlan([("after_step_commit", 8)])
    rid = await app.start(research)
    run = await drive(app, rid)
    assert run.status == "completed", run.error
    steps = await app.steps(rid)
    assert crash.fired and not crash.pending
    compressions = [s for s in steps if s.name == "agent:compress"]
    assert compressions, [s.name for s in steps]
    # every model call was made once: the replay after the crash re-ran no turn and no compression
    assert len(model.requests) == len([s for s in steps if s.kind == "llm"])
    for i, name in enumerate(model.models):
        small = name == "small"
        limit = room(SMALL_WINDOW if small else WINDOW, 512 if small else MAX_TOKENS)
        assert sent_tokens(model, i) <= limit
    last_turn = model.requests[model.models.index("big", len(model.models) - 2)]
    assert any("EARLIER: pages were read" in m.text for m in last_turn.messages)
    # no turn's text had to be truncated: compression kept the conversation inside the window
    assert all("cut" not in (s.output or {}) for s in steps if s.name == "agent:turn")
