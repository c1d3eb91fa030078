"""Budgets hold against what providers really bill: reservations are an upper bound of the input tokens
each wire format bills, and a model that bills past even that is learned from.

The fake provider reports the input tokens it is told to, as a real one reports its tokenizer's count:
more than the text suggests (short messages carry per-message and per-request overheads), or more than
any count of the text (a hidden system prompt).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from crewline import App, Context, Settings
from crewline.models import Gateway, ModelsConfig
from crewline.models.calibration import InputCalibration
from crewline.models.tokens import input_token_ceiling
from crewline.models.types import Message, ModelRequest, user
from crewline.testing import FakeProvider

# $0.001 an input token and nothing for output: a call's cost is its reported input tokens.
PRICE = {"input": 1000.0, "output": 0.0}


def models_table(url: str) -> dict[str, Any]:
    return {
        "default": "fake/mid",
        "max_tokens": 10,
        "providers": {"fake": {"format": "openai", "base_url": url + "/v1", "api_key_env": "FAKE_KEY"}},
        "prices": {"fake/mid": PRICE},
        "retry": {"attempts": 1},
    }


def app_on(db_url: str, fake: FakeProvider, budget: float) -> App:
    table = models_table(fake.url)
    table["budgets"] = {"workflow": {"burst": budget}}
    app = App(settings=Settings().with_(database_url=db_url, poll_interval=0.02))
    app.engine.models = Gateway(ModelsConfig.parse(table), app.db, environ={"FAKE_KEY": "sk-test"})
    return app


async def run_burst(app: App, runs: int) -> list[str]:
    @app.workflow()
    async def burst(ctx: Context, i: int) -> str:
        return await ctx.llm(messages=f"call {i}", max_tokens=10)

    ids = [await app.start(burst, i) for i in range(runs)]
    workers = [app.worker(concurrency=100, worker_id=f"w{i}") for i in range(2)]
    tasks = [asyncio.create_task(w.run()) for w in workers]
    statuses = []
    for rid in ids:
        while (run := await app.get_run(rid)).status not in ("completed", "failed"):
            await asyncio.sleep(0.05)
        statuses.append(run.status)
    for w in workers:
        w.stop()
    await asyncio.gather(*tasks)
    await app.models.flush()
    return statuses


async def test_200_concurrent_calls_never_settle_above_a_budget_that_holds_100(db_url: str) -> None:
    # "call 123" is 8 bytes: a 2-bytes-a-token guess reserves 8 input tokens ($0.008); the provider bills
    # 20 (OpenAI's chat format adds 3-4 a message and 3 a request), so all 200 would be admitted at once.
    with FakeProvider(api_key="sk-test", latency=0.3) as fake:
        fake.reply("ok", input_tokens=20, output_tokens=1, times=200)
        app = app_on(db_url, fake, budget=2.0)  # holds 100 calls of $0.02
        try:
            statuses = await run_burst(app, 200)
            spent = app.models.ledger.status("workflow:burst")["spent"]  # type: ignore[union-attr]
            completed = statuses.count("completed")
            assert spent <= 2.0 + 1e-9, f"settled ${spent:.3f} against a $2.00 budget"
            assert spent == pytest.approx(completed * 0.02)
            assert completed >= 50  # the ceiling holds budget a while longer, it does not refuse honest calls
            assert statuses.count("failed") == 200 - completed
        finally:
            await app.aclose()


async def test_a_model_that_bills_past_the_ceiling_is_learned_from(db_url: str) -> None:
    with FakeProvider(api_key="sk-test", latency=0.2) as fake:
        app = app_on(db_url, fake, budget=20.0)
        gateway = app.models
        try:
            ceiling = input_token_ceiling(ModelRequest(messages=[user("call 0")], model="fake/mid"))
            fake.reply("ok", input_tokens=500, output_tokens=1)  # a hidden system prompt billed as input
            await gateway.complete(None, "call 0", max_tokens=10, budget_scope={"workflow": "burst"})
            await gateway.flush()
            factors = await app.db.read(InputCalibration.misses)
            factor, misses = factors["fake/mid"]
            assert misses == 1 and factor * ceiling >= 500  # the miss is recorded with what covers it
            spent = gateway.ledger.status("workflow:burst")["spent"]  # type: ignore[union-attr]
            assert spent == pytest.approx(0.5)  # the difference still counts

            # Another process on the same database reserves with the correction from its first call.
            other = Gateway(gateway.config, app.db, environ={"FAKE_KEY": "sk-test"})
            fake.reply("ok", input_tokens=500, output_tokens=1, times=60)
            results = await asyncio.gather(
                *(
                    other.complete(None, f"call {i}", max_tokens=10, budget_scope={"workflow": "burst"})
                    for i in range(60)
                ),
                return_exceptions=True,
            )
            await other.flush()
            spent = gateway.ledger.status("workflow:burst")["spent"]  # type: ignore[union-attr]
            done = sum(1 for r in results if not isinstance(r, BaseException))
            assert spent <= 20.0 + 1e-9 and spent == pytest.approx(0.5 + 0.5 * done)
            assert (await app.db.read(InputCalibration.misses))["fake/mid"][1] == 1  # no further misses
            await other.aclose()
        finally:
            await app.aclose()


def test_the_ceiling_is_never_below_a_real_tokenizers_count_in_the_chat_format() -> None:
    llama_cpp = pytest.importorskip("llama_cpp", reason="the local extra brings a real tokenizer")
    from crewline.models.providers.local import bundled_model_path

    tok = llama_cpp.Llama(model_path=str(bundled_model_path()), vocab_only=True, verbose=False)
    texts = [
        "hi",
        "call 123",
        "The quarterly invoice for ACME GmbH is overdue by 14 days; please follow up politely.",
        "Sehr geehrte Damen und Herren, die Rechnung Nr. 2026-0815 ist überfällig.",
        "请尽快回复这封邮件\uff0c谢谢\uff01",
        "🚀🔥✅ " * 20,
        "9" * 300,
        "aGVsbG8gd29ybGQ=" * 40,
    ]
    for text in texts:
        # The chat template SmolLM2 is billed in: role markers around each message and the reply's priming.
        chat = f"<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n"
        counted = len(tok.tokenize(chat.encode(), add_bos=True, special=True))
        request = ModelRequest(model="m", messages=(Message("system", "You are helpful."), user(text)))
        assert input_token_ceiling(request) >= counted, text
