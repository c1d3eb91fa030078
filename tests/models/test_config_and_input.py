"""Config parsing, credentials and bad input: clear errors before any request is sent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from crewline.config import Settings
from crewline.errors import AuthError, ConfigError, InvalidInput, UnknownModel
from crewline.models import Gateway, ModelsConfig, Tool
from crewline.testing import FakeProvider, ScriptedModel


def test_parse_full_section() -> None:
    cfg = ModelsConfig.parse(
        {
            "default": "cheap",
            "strict_prices": True,
            "timeout": "30s",
            "aliases": {
                "fast": "openai/gpt-4o-mini",
                "smart": ["anthropic/claude-sonnet-4-5", "openai/gpt-4o"],
                "pool": {"balance": ["east", "west"], "fallback": ["openai/gpt-4o"]},
            },
            "tiers": {"order": ["cheap", "strong"], "cheap": "fast", "strong": "smart"},
            "providers": {
                "east": {"format": "openai", "base_url": "http://127.0.0.1:1/v1", "api_key_env": "EAST"}
            },
            "deployments": {
                "east": {"provider": "east", "model": "gpt-4o", "rpm": 10, "weight": 2},
                "west": {"provider": "openai", "model": "gpt-4o"},
            },
            "budgets": {"day": 5, "workflow": {"triage": 1.5}},
            "prices": {"east/gpt-4o": {"input": 2.5, "output": 10}},
            "cache": {"ttl": "1h"},
            "retry": {"attempts": 5},
        }
    )
    assert cfg.timeout == 30 and cfg.strict_prices and cfg.tier_order == ("cheap", "strong")
    assert cfg.aliases["pool"].steps == (("east", "west"), ("openai/gpt-4o",))
    assert cfg.deployments["east"].rpm == 10 and cfg.budgets.workflow == {"triage": 1.5}
    assert cfg.cache.ttl == 3600 and cfg.retry.attempts == 5


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ({"colour": "blue"}, "unknown key(s) colour"),
        ({"providers": {"x": {"base_url": "http://h"}}}, "needs format"),
        ({"deployments": {"d": {"provider": "openai"}}}, "needs provider and model"),
        ({"deployments": {"d": {"provider": "openai", "model": "m", "rpm": -1}}}, "rpm must be a positive"),
        ({"budgets": {"day": "lots"}}, "amount in USD"),
        ({"budgets": {"day": float("nan")}}, "[models.budgets] day must be an amount in USD"),
        ({"budgets": {"month": float("inf")}}, "[models.budgets] month must be an amount in USD"),
        ({"budgets": {"workflow": {"triage": float("nan")}}}, "[models.budgets.workflow] triage"),
        ({"prices": {"a/b": {"input": float("nan"), "output": 1}}}, "input must be an amount in USD"),
        ({"prices": {"a/b": {"input": 1}}}, "needs input and output"),
        ({"tiers": {"order": ["cheap"]}}, "not defined under [models.tiers]"),
        ({"timeout": "soon"}, "[models] timeout"),
        ({"aliases": {"x": 3}}, "[models.aliases.x]"),
        ({"breaker": {"error_ratio": 2}}, "error_ratio"),
    ],
)
def test_config_errors_name_the_key(raw: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        ModelsConfig.parse(raw)
    assert needle in str(info.value)


def test_from_settings_reads_crewline_toml(tmp_path: Path) -> None:
    (tmp_path / "crewline.toml").write_text(
        '[models]\ndefault = "fast"\n[models.aliases]\nfast = "openai/gpt-4o-mini"\n'
    )
    gw = Gateway.from_settings(Settings.load(tmp_path, environ={}))
    assert gw.router.resolve(None).deployments[0].key == "openai/gpt-4o-mini"


async def test_missing_key_names_the_variable() -> None:
    gw = Gateway(ModelsConfig(), environ={})
    with pytest.raises(AuthError, match="ANTHROPIC_API_KEY"):
        await gw.complete("anthropic/claude-haiku-4-5", "hi")
    await gw.aclose()


async def test_unknown_models_and_cycles() -> None:
    gw = Gateway(ModelsConfig.parse({"aliases": {"a": "b", "b": "a", "bad": "nowhere/m"}}), environ={})
    with pytest.raises(UnknownModel, match="unknown model 'gpt-4'"):
        await gw.complete("gpt-4", "hi")
    with pytest.raises(UnknownModel, match="reached from 'bad'"):
        await gw.complete("bad", "hi")
    with pytest.raises(ConfigError, match="cycle"):
        await gw.complete("a", "hi")
    await gw.aclose()
    bare = Gateway(ModelsConfig(default=None), environ={})
    with pytest.raises(UnknownModel, match="no model given"):
        await bare.complete(None, "hi")
    await bare.aclose()


def test_local_is_the_default_tier_unless_tiers_are_configured() -> None:
    plain = ModelsConfig.parse({})
    assert plain.default == "local" and plain.tier_order == ("local",)
    assert plain.aliases["local"].steps == (("local/smollm2",),)
    tiered = ModelsConfig.parse(
        {"tiers": {"order": ["cheap"], "cheap": "openai/gpt-4o-mini"}, "default": "cheap"}
    )
    assert tiered.tier_order == ("cheap",) and "local" in tiered.aliases


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"messages": []}, "non-empty list"),
        ({"messages": [{"role": "bot", "content": "x"}]}, "role 'bot'"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "tool_call_id"),
        ({"messages": [{"role": "user", "content": [{"type": "audio"}]}]}, "content[0]"),
        ({"messages": "x", "tools": [{"name": "bad name!"}]}, "tools[0]"),
        ({"messages": "x", "tools": [Tool("t", parameters={"type": "string"})]}, "type 'object'"),
        ({"messages": "x", "tools": [Tool("t"), Tool("t")]}, "given twice"),
        ({"messages": "x", "tool_choice": "missing"}, "tool_choice"),
        ({"messages": "x", "max_tokens": 0}, "max_tokens"),
        ({"messages": "x", "temperature": 3}, "temperature"),
        ({"messages": "x", "budget_scope": {"team": "a"}}, "budget_scope key 'team'"),
        ({"messages": "x", "output_retries": -1}, "output_retries"),
    ],
)
async def test_bad_input_fails_before_sending(kwargs: dict[str, Any], needle: str, sqlite_url: str) -> None:
    from crewline.store import open_database

    db = open_database(sqlite_url)
    model = ScriptedModel()
    gw = Gateway.for_testing(model, db)
    with pytest.raises(InvalidInput) as info:
        await gw.complete(**kwargs)
    assert needle in str(info.value) and model.requests == []
    await gw.aclose()
    db.close()


async def test_openai_style_dict_messages_are_accepted(fake: FakeProvider, make_gateway: Any) -> None:
    gw = make_gateway()
    messages = [
        {"role": "system", "content": "sys"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}
            ],
        },
        {"role": "tool", "tool_call_id": "c", "content": "done"},
    ]
    await gw.complete(
        "openai/m",
        messages,
        tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
    )
    sent = fake.requests[-1].body["messages"]
    assert sent[1]["content"][1]["image_url"]["url"] == "data:image/png;base64,AAAA"
    assert sent[2]["tool_calls"][0]["function"]["arguments"] == '{"a": 1}'
