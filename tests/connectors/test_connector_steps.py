"""Connectors as durable steps: ``ctx.connector(name)`` runs each operation through the step journal with
its effect and idempotency key, records no credential, never repeats an effect on replay, and hands the
operations to agents as tools. The registry parses ``[connectors.*]`` and reports bad sections."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from crewline import App, ConfigError, Context, InvalidInput, Settings
from crewline.connectors import registry
from crewline.connectors.registry import Connectors, connectors_problems, parse_connector
from crewline.flows.tools import Tool
from crewline.secret_store import Credentials

from ..flows._drive import CrashPlan, drive, expire_leases, step_once
from . import _counting
from ._counting import BUMP, Total

TOKEN = "tok-very-secret-1234"


@pytest.fixture(autouse=True)
def counting_type(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setitem(registry.TYPES, "counting", "tests.connectors._counting:CONNECTOR")
    monkeypatch.setenv("COUNT_TOKEN", TOKEN)
    _counting.CALLS.clear()
    yield


@pytest.fixture
def app(db_url: str) -> Iterator[App]:
    sections = {"connectors": {"tally": {"type": "counting", "token": "env:COUNT_TOKEN", "start": 10}}}
    a = App(db_url, settings=Settings(sections=sections))

    @a.workflow()
    async def tally(ctx: Context, n: int) -> Any:
        first = await ctx.connector("tally").call(BUMP, n=n)
        again = await ctx.connector("tally").call("bump", {"n": 1})
        return {"first": first.total, "again": again.total, "typed": isinstance(first, Total)}

    yield a
    a.close()


async def test_each_operation_is_a_step_recorded_without_credentials_and_never_repeated(app: App) -> None:
    app.engine.crash_hook = CrashPlan([("after_step_commit", 1)])
    rid = await app.start("tally", 5)
    assert await step_once(app, "w1") == ["crashed"]
    await expire_leases(app)
    run = await drive(app, rid)
    assert run.output == {"first": 15, "again": 16, "typed": True}
    # The first call was recorded before the crash: the replay returned it, the connector saw it once.
    assert [(c["op"], c["n"]) for c in _counting.CALLS] == [("bump", 5), ("bump", 1)]
    assert all(c["token"] == TOKEN for c in _counting.CALLS)
    steps = await app.steps(rid)
    assert [(s.kind, s.name, s.effect) for s in steps] == [
        ("step", "tally.bump", "idempotent"),
        ("step", "tally.bump", "idempotent"),
    ]
    assert steps[0].input == {
        "connector": "tally",
        "operation": "bump",
        "effect": "idempotent",
        "idempotency_key": _counting.CALLS[0]["key"],
        "arguments": {"n": 5},
    }
    assert (
        _counting.CALLS[0]["key"].startswith(rid) and _counting.CALLS[0]["key"] != _counting.CALLS[1]["key"]
    )
    for s in steps:
        assert TOKEN not in repr(s.input) + repr(s.output)


async def test_bad_arguments_and_unknown_operations_say_what_is_wrong(app: App) -> None:
    @app.workflow()
    async def wrong(ctx: Context, which: str) -> Any:
        if which == "args":
            return await ctx.connector("tally").call(BUMP, n="many")
        if which == "op":
            return await ctx.connector("tally").call("bmup")
        return await ctx.connector("nosuch").call("bump")

    messages = []
    for which in ("args", "op", "conn"):
        rid = await app.start("wrong", which)
        run = await drive(app, rid)
        assert run.status == "failed"
        messages.append(str((run.error or {}).get("message")))
    assert "arguments for tally.bump are not valid: n:" in messages[0]
    assert "connector 'tally' has no operation 'bmup' (known: bump, send)" in messages[1]
    assert "no connector named 'nosuch'" in messages[2] and "[connectors.nosuch]" in messages[2]
    assert _counting.CALLS == []


async def test_operations_become_agent_tools(app: App) -> None:
    tools: list[Tool] = []

    @app.workflow()
    async def list_tools(ctx: Context) -> Any:
        tools.extend(ctx.connector("tally").tools())
        return [t.name for t in tools]

    run = await drive(app, await app.start("list_tools"))
    assert run.output == ["tally_bump", "tally_send"]
    assert tools[0].json_schema()["properties"]["n"]["type"] == "integer"
    assert (tools[0].effect, tools[0].default_risk, tools[1].default_risk) == ("idempotent", "low", "medium")
    assert tools[0].description == "Add n to the counter."


async def test_connectors_are_built_once_and_closed_with_the_app(app: App) -> None:
    built = app.engine.connectors.get("tally")
    assert app.engine.connectors.get("tally") is built
    await app.aclose()
    assert isinstance(built, _counting.Counting) and built.closed


def test_bad_sections_name_the_section_and_key_and_never_echo_a_value() -> None:
    creds = Credentials(None, None, {})
    section = {
        "a": {"type": "countng"},
        "b": {"type": "counting", "token": "xoxb-pasted-token"},
        "c": {"type": "counting", "token": "env:COUNT_TOKEN", "strat": 1},
        "d": {"type": "counting", "token": "env:UNSET_VARIABLE"},
        "e": {"type": "counting", "token": "secret:crm"},
        "f": "counting",
        "g": {"token": "env:X"},
    }
    problems = connectors_problems(section, creds)
    text = "\n".join(problems)
    assert "xoxb-pasted-token" not in text
    assert problems[0].startswith(
        "[connectors.a] type = 'countng' is not a connector type (did you mean 'counting'?)"
    )
    assert problems[1].startswith("[connectors.b] token: ") and "env:NAME or secret:NAME" in problems[1]
    assert problems[2] == "[connectors.c] strat: is not a known key"
    assert (
        problems[3]
        == "[connectors.d] token: env:UNSET_VARIABLE is not set; export UNSET_VARIABLE or use secret:NAME instead"
    )
    assert "[connectors.e] token: secret:crm needs the secrets key" in problems[4]
    assert problems[5].startswith("[connectors.f] must be a table")
    assert problems[6].startswith("[connectors.g] needs type = one of")
    with pytest.raises(ConfigError, match=r"\[connectors.b\] token"):
        parse_connector("b", section["b"])


async def test_an_unknown_connector_lists_the_known_ones() -> None:
    connectors = Connectors(
        {"tally": {"type": "counting", "token": "env:COUNT_TOKEN"}}, Credentials(None, None)
    )
    with pytest.raises(
        ConfigError, match=r"no connector named 'taly' \(did you mean 'tally'\?\) \(known: tally\)"
    ):
        connectors.get("taly")
    assert InvalidInput  # the argument errors above are InvalidInput, which a run records as its failure


async def test_an_irreversible_operation_left_unknown_by_a_crash_is_reconciled(app: App) -> None:
    from crewline.flows import Reconciled
    from crewline.flows.step_connector import ConnectorCall

    from ._counting import SEND

    asked: list[tuple[int, str]] = []

    async def sent(arguments: Any, idempotency_key: str) -> Reconciled:
        asked.append((arguments.n, idempotency_key))
        if arguments.n == 7:  # the remote side says it has it (sent by someone before the crash)
            return Reconciled.done({"total": 99})
        seen = [c for c in _counting.CALLS if c["key"] == idempotency_key]
        return Reconciled.done(seen[0]) if seen else Reconciled.not_done()

    @app.workflow()
    async def send(ctx: Context, n: int) -> Any:
        return await ctx.connector("tally").call(SEND, n=n, options=ConnectorCall(reconcile=sent))

    for n, expected, calls in ((3, {"total": 13}, 1), (7, {"total": 99}, 1)):
        app.engine.crash_hook = CrashPlan([("after_intent", 1)])
        rid = await app.start("send", n)
        assert await step_once(app, "w1") == ["crashed"]
        await expire_leases(app)
        run = await drive(app, rid)
        assert run.status == "completed" and run.output == expected
        assert asked[-1] == (n, f"{rid}:1") and len(_counting.CALLS) == calls
        assert [(s.kind, s.name) for s in await app.steps(rid)] == [
            ("step", "tally.send"),
            ("reconcile", "reconcile tally.send"),
        ]
