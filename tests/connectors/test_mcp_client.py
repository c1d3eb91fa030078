"""An MCP server as a connector: its tools as durable steps with per-tool effects and an allow-list, for
``ctx.connector`` and agents; hard timeouts; errors that name the connector and never a credential.

The server is the official SDK's ``MCPServer`` (tests/connectors/_mcp_server.py), reached in process,
over streamable HTTP on loopback and over stdio."""

from __future__ import annotations

import logging
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from crewline import App, ConfigError, ConnectorTimeout, Context, InvalidInput, RetryPolicy, Settings
from crewline.connectors.base import ConnectorSetup
from crewline.connectors.mcp_client import McpConnector, McpSettings, effect_of
from crewline.connectors.registry import connectors_problems, parse_connector
from crewline.flows.step_connector import ConnectorCall
from crewline.secret_store import Credentials

from .._leaks import logged, stored
from ..flows._drive import CrashPlan, drive, expire_leases, step_once
from . import _mcp_server

TOKEN = "mcp-bearer-very-secret-987"
ROOT = Path(__file__).resolve().parents[2]
ALLOWED = ["add", "create_ticket", "set_flag", "hang", "fail"]


@pytest.fixture(autouse=True)
def remote_side() -> None:
    _mcp_server.CREATED.clear()
    _mcp_server.KEYS.clear()


@pytest.fixture
def mcp_url() -> Iterator[str]:
    """The test server over streamable HTTP on a loopback port, requiring ``Bearer TOKEN``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        _mcp_server.http_app(TOKEN), log_level="warning", lifespan="on", timeout_graceful_shutdown=1
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "MCP server did not start"
        time.sleep(0.01)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/mcp"
    server.should_exit = True
    thread.join(timeout=30)
    sock.close()


def make_app(db_url: str, **tools: Any) -> App:
    return App(db_url, settings=Settings(sections={"connectors": {"tools": {"type": "mcp", **tools}}}))


def in_process(app: App, **settings: Any) -> None:
    """Use the SDK server in this process as the connector ``tools`` (an app that embeds one)."""
    parsed = McpSettings.model_validate({"type": "mcp", "url": "http://in-process.invalid/mcp", **settings})
    setup = ConnectorSetup("tools", parsed, Credentials(None, None, {}))
    app.engine.connectors.add(McpConnector(setup, server=_mcp_server.build()))


def register(app: App) -> None:
    @app.workflow()
    async def ticket(ctx: Context, title: str) -> Any:
        tools = await ctx.connector("tools").load()
        total = await tools.call("add", a=2, b=3)
        created = await tools.call("create_ticket", title=title)
        flag = await tools.call("set_flag", {"name": "seen", "on": True})
        return {"total": total, "ticket": created, "flag": flag}


async def test_each_tool_call_is_a_durable_step_with_its_effect_and_never_repeated(db_url: str) -> None:
    app = make_app(db_url)
    in_process(app, tools=ALLOWED, effects={"set_flag": "irreversible"})
    register(app)
    app.engine.crash_hook = CrashPlan([("after_step_commit", 3)])  # right after the ticket was created
    rid = await app.start("ticket", "printer on fire")
    assert await step_once(app, "w1") == ["crashed"]
    await expire_leases(app)
    run = await drive(app, rid)
    assert run.output == {
        "total": {"result": 5},
        "ticket": {"id": "T-1", "title": "printer on fire"},
        "flag": {"result": "seen=on"},
    }
    assert _mcp_server.CREATED == ["printer on fire"]  # the replay returned the recorded ticket
    steps = await app.steps(rid)
    assert [(s.name, s.effect) for s in steps] == [
        ("tools.list_tools", "read"),
        ("tools.add", "read"),  # readOnlyHint
        ("tools.create_ticket", "irreversible"),  # no annotations
        ("tools.set_flag", "irreversible"),  # idempotentHint, overridden by effects = {...}
    ]
    assert [steps[2].input["idempotency_key"]] == _mcp_server.KEYS
    assert {t["name"] for t in steps[0].output} == set(ALLOWED)
    await app.aclose()


async def test_a_tool_off_the_allow_list_is_neither_offered_nor_called(db_url: str) -> None:
    app = make_app(db_url)
    in_process(app, tools=ALLOWED)

    @app.workflow()
    async def sneaky(ctx: Context) -> Any:
        tools = await ctx.connector("tools").load()
        return [t.name for t in tools.tools()], await tools.call("drop_everything")

    run = await drive(app, await app.start("sneaky"))
    assert run.status == "failed"
    assert "no operation 'drop_everything'" in run.error["message"] and "add" in run.error["message"]
    assert _mcp_server.CREATED == []
    await app.aclose()


async def test_tools_carry_the_server_schema_to_ctx_tool_and_agents(db_url: str) -> None:
    app = make_app(db_url)
    in_process(app, tools=ALLOWED)
    seen: dict[str, Any] = {}

    @app.workflow()
    async def use(ctx: Context) -> Any:
        with pytest.raises(InvalidInput, match="load"):
            ctx.connector("tools").tools()
        tools = {t.name: t for t in (await ctx.connector("tools").load()).tools()}
        seen.update(tools)
        return await ctx.tool(tools["tools_add"], a=20, b=22)

    run = await drive(app, await app.start("use"))
    assert run.output == {"result": 42}, run.error
    add, ticket = seen["tools_add"], seen["tools_create_ticket"]
    assert add.json_schema()["properties"]["a"]["type"] == "integer"
    assert add.json_schema()["required"] == ["a", "b"]
    assert (add.effect, add.default_risk, ticket.effect, ticket.default_risk) == (
        "read",
        "low",
        "irreversible",
        "medium",
    )
    with pytest.raises(InvalidInput, match="missing required argument"):
        add.validate({"a": 1})
    await app.aclose()


async def test_a_hanging_tool_is_a_timeout_the_run_retries_by_its_policy(db_url: str, mcp_url: str) -> None:
    app = make_app(
        db_url, url=mcp_url, headers={"Authorization": "env:MCP_AUTH"}, tools=ALLOWED, call_timeout="0.3s"
    )

    @app.workflow()
    async def stuck(ctx: Context) -> Any:
        tools = await ctx.connector("tools").load()
        retry = RetryPolicy(max_attempts=2, initial_delay=0.01, jitter=0)
        return await tools.call("hang", options=ConnectorCall(retry=retry))

    with pytest.MonkeyPatch.context() as env:
        env.setenv("MCP_AUTH", f"Bearer {TOKEN}")
        run = await drive(app, await app.start("stuck"))
    assert run.status == "failed"
    assert run.error["type"] == ConnectorTimeout.__name__
    assert "connector 'tools'" in run.error["message"] and "call_timeout 0.3s" in run.error["message"]
    steps = await app.steps(run.id)
    assert [(s.name, s.status, s.attempts) for s in steps][-1] == ("tools.hang", "failed", 2)
    await app.aclose()


async def test_over_http_with_a_credential_reference_that_never_shows(
    db_url: str, mcp_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    app = make_app(db_url, url=mcp_url, headers={"Authorization": "env:MCP_AUTH"}, tools=ALLOWED)
    register(app)

    @app.workflow()
    async def failing(ctx: Context) -> Any:
        return await (await ctx.connector("tools").load()).call("fail", reason="disk full")

    with pytest.MonkeyPatch.context() as env:
        env.setenv("MCP_AUTH", f"Bearer {TOKEN}")
        done = await drive(app, await app.start("ticket", "over http"))
        failed = await drive(app, await app.start("failing"))
        env.setenv("MCP_AUTH", "Bearer wrong-token")
        refused = await drive(app, await app.start("ticket", "refused"))
    assert done.status == "completed" and done.output["ticket"]["title"] == "over http"
    assert failed.status == "failed" and failed.error["type"] == "ConnectorRejected"
    assert "tool fail failed" in failed.error["message"] and "disk full" in failed.error["message"]
    assert refused.status == "failed" and refused.error["type"] == "ConnectorAuthError", refused.error
    assert "connector 'tools'" in refused.error["message"] and "headers" in refused.error["message"]
    for run in (done, failed, refused):
        for step in await app.steps(run.id):
            assert TOKEN not in repr(step.input) + repr(step.output) + repr(step.error)
        assert TOKEN not in repr(run.error)
    assert _mcp_server.CREATED == ["over http"]
    assert TOKEN not in stored(app.db) and "over http" in stored(app.db)
    assert TOKEN not in logged(caplog)
    await app.aclose()


async def test_over_stdio(db_url: str) -> None:
    command = [sys.executable, "-m", "tests.connectors._mcp_server"]
    app = make_app(db_url, command=command, tools=["add"], env={"PYTHONPATH": "env:MCP_PYTHONPATH"})

    @app.workflow()
    async def add(ctx: Context) -> Any:
        return await ctx.connector("tools").call("add", a=1, b=1)

    with pytest.MonkeyPatch.context() as env:
        env.setenv("MCP_PYTHONPATH", f"{ROOT / 'src'}:{ROOT}")
        env.chdir(ROOT)
        run = await drive(app, await app.start("add"))
    assert run.status == "completed" and run.output == {"result": 2}
    await app.aclose()


async def test_a_server_that_is_not_there_is_unavailable_and_retryable(db_url: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = make_app(db_url, url=f"http://127.0.0.1:{port}/mcp", connect_timeout="2s")

    @app.workflow()
    async def lost(ctx: Context) -> Any:
        return await ctx.connector("tools").call(
            "add", options=ConnectorCall(retry=RetryPolicy(max_attempts=1))
        )

    run = await drive(app, await app.start("lost"))
    assert run.status == "failed" and run.error["type"] in ("ConnectorUnavailable", "ConnectorTimeout")
    assert "connector 'tools'" in run.error["message"]
    await app.aclose()


async def test_a_server_that_accepts_but_never_answers_times_out_connecting(db_url: str) -> None:
    with socket.socket() as silent:  # the kernel accepts connections; nobody ever answers them
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        app = make_app(db_url, url=f"http://127.0.0.1:{silent.getsockname()[1]}/mcp", connect_timeout="0.3s")

        @app.workflow()
        async def silence(ctx: Context) -> Any:
            retry = RetryPolicy(max_attempts=2, initial_delay=0.01, jitter=0)
            return await ctx.connector("tools").call("add", options=ConnectorCall(retry=retry))

        run = await drive(app, await app.start("silence"))
    assert run.status == "failed" and run.error["type"] == "ConnectorTimeout"
    assert "of connecting (connect_timeout 0.3s)" in run.error["message"]
    assert [(s.name, s.attempts) for s in await app.steps(run.id)] == [("tools.list_tools", 3)]
    await app.aclose()


def test_effects_come_from_annotations_and_settings_are_checked() -> None:
    assert effect_of({"read_only_hint": True}) == "read"
    assert effect_of({"idempotent_hint": True}) == "idempotent"
    assert effect_of({"idempotent_hint": True, "destructive_hint": True}) == "irreversible"
    assert effect_of(None) == "irreversible"
    creds = Credentials(None, None, {})
    section = {
        "both": {"type": "mcp", "url": "https://x.example/mcp", "command": ["srv"]},
        "none": {"type": "mcp"},
        "pasted": {
            "type": "mcp",
            "url": "https://x.example/mcp",
            "headers": {"Authorization": "Bearer abc123"},
        },
        "effects": {"type": "mcp", "command": ["srv"], "tools": ["a"], "effects": {"b": "read"}},
        "timeout": {"type": "mcp", "command": ["srv"], "call_timeout": "forever"},
        "unset": {"type": "mcp", "url": "https://x.example/mcp", "headers": {"X-Key": "env:NOT_SET_HERE"}},
    }
    problems = connectors_problems(section, creds)
    text = "\n".join(problems)
    assert len(problems) == 6, problems
    for name in section:
        assert f"[connectors.{name}]" in text
    assert "either url" in text and "abc123" not in text and "effects names tools" in text
    assert "call_timeout" in text and "NOT_SET_HERE is not set" in text
    with pytest.raises(ConfigError, match=r"\[connectors.none\]"):
        parse_connector("none", section["none"])


async def test_an_agent_calls_an_mcp_tool_it_was_shown_with_the_server_schema(db_url: str) -> None:
    from crewline.models import Gateway, ModelsConfig
    from crewline.testing import FakeProvider

    from ..flows.test_ai_steps import models_table

    app = make_app(db_url)
    in_process(app, tools=ALLOWED)
    with FakeProvider(api_key="sk-test") as fake:
        app.engine.models = Gateway(
            ModelsConfig.parse(models_table(fake.url)), app.db, environ={"FAKE_KEY": "sk-test"}
        )
        fake.reply(tool_calls=[("tools_add", {"a": 2, "b": 5})])
        fake.reply("It is 7.")

        @app.workflow()
        async def sums(ctx: Context) -> Any:
            tools = (await ctx.connector("tools").load()).tools("add")
            result = await ctx.agent("What is 2 + 5?", tools=tools, model="cheap", max_steps=3)
            return result.output

        run = await drive(app, await app.start("sums"))
        shown = fake.requests[0].body["tools"]
    assert run.output == "It is 7.", run.error
    assert [t["function"]["name"] for t in shown] == ["tools_add"]
    assert shown[0]["function"]["parameters"]["required"] == ["a", "b"]
    steps = await app.steps(run.id)
    assert [(s.kind, s.name, s.effect) for s in steps] == [
        ("step", "tools.list_tools", "read"),
        ("llm", "agent:turn", "read"),
        ("tool", "tools_add", "read"),
        ("llm", "agent:turn", "read"),
    ]
    assert steps[2].output == {"result": 7}
    await app.aclose()
