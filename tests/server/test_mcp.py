"""crewline as an MCP server, driven by the official MCP SDK client: over HTTP (`/mcp` of a real server on
loopback) and over stdio (`crewline mcp` as a subprocess)."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult

from crewline import App
from crewline.server import ServerConfig
from crewline.server.mcp import McpEndpoint

from .._leaks import logged, stored
from .conftest import cli_env, make_app, new_key, serving


@pytest.fixture
def served(db_url: str, tmp_path: Path) -> Iterator[tuple[App, str]]:
    app = make_app(db_url, tmp_path)
    with serving(app) as url:
        yield app, url


@asynccontextmanager
async def connect(url: str, token: str | None, mode: str = "auto", **headers: str) -> AsyncIterator[Client]:
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with (
        httpx2.AsyncClient(headers=headers, timeout=30) as http,
        Client(streamable_http_client(f"{url}/mcp", http_client=http), mode=mode) as client,
    ):
        yield client


def ok(result: CallToolResult) -> dict[str, Any]:
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return result.structured_content


def refused(result: CallToolResult) -> str:
    assert result.is_error
    text: str = result.content[0].text  # type: ignore[union-attr]
    assert "Traceback" not in text and "/" not in text.replace("/day", "")
    return text


async def until(client: Client, run_id: str, *statuses: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        run = ok(await client.call_tool("get_run", {"run_id": run_id}))
        if run["status"] in statuses or time.monotonic() > deadline:
            return run
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_a_workflow_started_over_mcp_completes(
    served: tuple[App, str], mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    app, url = served
    token = new_key(app, "operator")
    async with connect(url, token, mode) as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert names == {
            "start_workflow",
            "get_run",
            "list_workflows",
            "list_reviews",
            "decide_review",
            "search_memory",
        }
        started = ok(
            await client.call_tool(
                "start_workflow",
                {"workflow": "order", "input": {"id": "o1", "amount": 4}, "idempotency_key": "mcp-1"},
            )
        )
        assert started["created"] is True
        run = await until(client, started["run_id"], "completed", "failed")
        assert run["status"] == "completed" and run["output"] == {"id": "o1", "total": 8}
        again = ok(
            await client.call_tool(
                "start_workflow",
                {"workflow": "order", "input": {"id": "o1", "amount": 4}, "idempotency_key": "mcp-1"},
            )
        )
        assert again == {"run_id": started["run_id"], "created": False}
        conflict = refused(
            await client.call_tool(
                "start_workflow",
                {"workflow": "order", "input": {"id": "o2", "amount": 1}, "idempotency_key": "mcp-1"},
            )
        )
        assert "another input" in conflict
    assert len(await app.list_runs()) == 1
    assert token not in stored(app.db) and token not in logged(caplog)


async def test_bad_arguments_are_tool_errors_that_say_what_to_fix(served: tuple[App, str]) -> None:
    app, url = served
    async with connect(url, new_key(app, "operator")) as client:
        wrong = refused(await client.call_tool("start_workflow", {"workflow": "order", "input": {"id": 1}}))
        assert "id" in wrong and "amount" not in wrong.split("id", 1)[0]
        unknown = refused(await client.call_tool("start_workflow", {"workflow": "nosuch"}))
        assert "nosuch" in unknown
        extra = refused(await client.call_tool("get_run", {"run": "x"}))
        assert "invalid arguments for get_run" in extra and "run_id: Field required" in extra
        missing = refused(await client.call_tool("get_run", {"run_id": "no-such-run"}))
        assert "no-such-run" in missing
        no_tool = refused(await client.call_tool("drop_tables", {}))
        assert "no tool 'drop_tables'" in no_tool and "start_workflow" in no_tool
    assert await app.list_runs() == []


async def test_each_tool_is_authorised_by_the_key_scope(served: tuple[App, str]) -> None:
    app, url = served
    async with connect(url, new_key(app, "trigger")) as trigger:
        own = ok(await trigger.call_tool("start_workflow", {"workflow": "nothing"}))["run_id"]
        assert (await until(trigger, own, "completed"))["status"] == "completed"
        message = refused(await trigger.call_tool("list_reviews", {}))
        assert "scope 'trigger'" in message and "read reviews" in message
    others = await app.start("nothing")
    async with connect(url, new_key(app, "trigger")) as stranger:
        assert "no run with id" in refused(await stranger.call_tool("get_run", {"run_id": own}))
    async with connect(url, new_key(app, "reviewer")) as reviewer:
        message = refused(await reviewer.call_tool("start_workflow", {"workflow": "nothing"}))
        assert "scope 'reviewer'" in message and "may not start runs" in message
        assert "may not read runs" in refused(await reviewer.call_tool("get_run", {"run_id": others}))
        assert ok(await reviewer.call_tool("list_reviews", {})) == {"reviews": []}
    async with connect(url, new_key(app, "proxy")) as proxy:
        assert "may not search memory" in refused(
            await proxy.call_tool("search_memory", {"query": "x", "scopes": ["global"]})
        )
    assert len(await app.list_runs()) == 2


async def test_requests_without_a_valid_key_are_401_and_reach_no_tool(served: tuple[App, str]) -> None:
    app, url = served
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    headers = {"Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2026-07-28"}
    for token in (None, "crl_000000000000_" + "x" * 40):
        sent = headers if token is None else {**headers, "Authorization": f"Bearer {token}"}
        r = httpx.post(f"{url}/mcp", json=body, headers=sent)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert r.json()["error"]["type"] in ("unauthenticated", "invalid_key")
    with pytest.raises(Exception):  # noqa: B017 - the SDK's own error for a refused connection
        async with connect(url, None) as client:
            await client.call_tool("start_workflow", {"workflow": "nothing"})
    assert await app.list_runs() == []


async def test_host_and_origin_are_checked_against_dns_rebinding(db_url: str, tmp_path: Path) -> None:
    app = make_app(db_url, tmp_path, {"mcp": {"allowed_origins": ["https://ops.example.com"]}})
    token = new_key(app, "operator")
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    headers = {
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": "2026-07-28",
        "Authorization": f"Bearer {token}",
    }
    with serving(app) as url:
        evil_origin = httpx.post(
            f"{url}/mcp", json=body, headers={**headers, "Origin": "http://evil.example"}
        )
        assert evil_origin.status_code == 403
        error = evil_origin.json()["error"]
        assert error["type"] == "origin_not_allowed" and "[mcp] allowed_origins" in error["message"]
        evil_host = httpx.post(f"{url}/mcp", json=body, headers={**headers, "Host": "evil.example:80"})
        assert evil_host.status_code == 421 and "[mcp] allowed_hosts" in evil_host.json()["error"]["message"]
        assert "Bearer" not in evil_host.text and token not in evil_origin.text
        async with connect(url, token, Origin="https://ops.example.com") as client:
            ok(await client.call_tool("start_workflow", {"workflow": "nothing"}))
        with pytest.raises(Exception):  # noqa: B017 - the SDK's own error for a refused request
            async with connect(url, token, Origin="https://evil.example") as client:
                await client.call_tool("start_workflow", {"workflow": "nothing"})
    assert len(await app.list_runs()) == 1


def test_allowed_hosts_take_names_with_or_without_a_port(db_url: str, tmp_path: Path) -> None:
    settings = {"mcp": {"allowed_hosts": ["ops.example.com", "box.lan:8443"]}, "server": {}}
    app = make_app(db_url, tmp_path, settings)
    config = ServerConfig.from_settings(app.settings)
    allowed = McpEndpoint(app, None, config.mcp, "https://crew.example.org")._hosts  # type: ignore[arg-type]
    for host in ("ops.example.com", "OPS.example.com:9000", "box.lan:8443", "localhost:1", "[::1]:8000"):
        assert allowed.refusal(host, None) is None, host
    assert allowed.refusal("crew.example.org", "https://crew.example.org") is None
    for host in ("box.lan:8444", "evil.example", "", "a b", "ops.example.com@evil:80"):
        assert allowed.refusal(host, None) is not None, host
    assert allowed.refusal("localhost", "http://localhost.evil.example") is not None
    assert allowed.refusal("localhost", "null") is not None
    app.close()


async def test_reviews_are_listed_and_decided_with_an_edit(served: tuple[App, str]) -> None:
    app, url = served
    async with connect(url, new_key(app, "operator")) as client:
        run_id = ok(
            await client.call_tool(
                "start_workflow", {"workflow": "refund", "input": {"id": "r", "amount": 90}}
            )
        )["run_id"]
        assert (await until(client, run_id, "waiting"))["status"] == "waiting"
    async with connect(url, new_key(app, "reviewer", name="ana")) as reviewer:
        reviews = ok(await reviewer.call_tool("list_reviews", {"run_id": run_id}))["reviews"]
        assert [r["preview"] for r in reviews] == [{"amount": 90}]
        review = reviews[0]
        no_edit = refused(
            await reviewer.call_tool("decide_review", {"review_id": review["id"], "decision": "edit"})
        )
        assert "needs `edit`" in no_edit
        decided = ok(
            await reviewer.call_tool(
                "decide_review",
                {
                    "review_id": review["id"],
                    "decision": "edit",
                    "edit": {"amount": 40},
                    "seen_hash": review["content_hash"],
                },
            )
        )
        assert decided["status"] == "approved" and "ana" in decided["decided_by"]
        again = refused(
            await reviewer.call_tool("decide_review", {"review_id": review["id"], "decision": "reject"})
        )
        assert review["id"] in again or "already" in again
    assert await app.result(run_id, timeout=60) == {
        "approved": True,
        "amount": 40,
        "by": decided["decided_by"],
    }


async def test_memory_is_searched_in_the_given_scopes(served: tuple[App, str]) -> None:
    app, url = served
    await app.memory.remember("Acme pays its invoices net 30 by bank transfer", scope="customer:acme")
    await app.memory.remember("Globex prefers email over phone", scope="customer:globex")
    async with connect(url, new_key(app, "operator")) as client:
        hits = ok(
            await client.call_tool(
                "search_memory", {"query": "how does Acme pay invoices", "scopes": ["customer:acme"]}
            )
        )["hits"]
        assert [h["scope"] for h in hits] == ["customer:acme"] and "net 30" in hits[0]["text"]
        assert "scopes" in refused(await client.call_tool("search_memory", {"query": "x", "scopes": []}))


def _stdio(db_url: str, tmp_path: Path, token: str, *args: str) -> StdioServerParameters:
    env = cli_env(db_url, CREWLINE_API_KEY=token, CREWLINE_PROJECT=str(tmp_path))
    return StdioServerParameters(
        command=sys.executable, args=["-m", "crewline", "mcp", *args], env=env, cwd=tmp_path
    )


async def test_stdio_serves_the_same_tools_with_the_key_from_the_environment(
    db_url: str, tmp_path: Path
) -> None:
    app = make_app(db_url, tmp_path)
    operator, reviewer = new_key(app, "operator"), new_key(app, "reviewer")
    async with Client(_stdio(db_url, tmp_path, operator, "--workers", "2")) as client:
        run_id = ok(
            await client.call_tool("start_workflow", {"workflow": "order", "input": {"id": "s", "amount": 2}})
        )["run_id"]
        run = await until(client, run_id, "completed", "failed")
        assert run["output"] == {"id": "s", "total": 4}
        assert "invalid arguments" in refused(await client.call_tool("get_run", {}))
    async with Client(_stdio(db_url, tmp_path, reviewer)) as client:
        assert "scope 'reviewer'" in refused(
            await client.call_tool("start_workflow", {"workflow": "nothing"})
        )
    assert len(await app.list_runs()) == 1
    app.close()


def test_stdio_without_a_valid_key_says_which_variable_to_set(db_url: str, tmp_path: Path) -> None:
    for token, words in (("", "set CREWLINE_API_KEY"), ("crl_000000000000_" + "y" * 40, "not valid")):
        env = cli_env(db_url, CREWLINE_API_KEY=token, CREWLINE_PROJECT=str(tmp_path))
        done = subprocess.run(
            [sys.executable, "-m", "crewline", "mcp"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 2 and words in done.stderr and "Traceback" not in done.stderr
        assert done.stdout == "" and (not token or token not in done.stderr)


def test_config_check_names_the_mcp_key_that_is_wrong(tmp_path: Path) -> None:
    from crewline.cli.config import check_project

    (tmp_path / "crewline.toml").write_text('[mcp]\nallowed_hosts = "ops.example.com"\n', encoding="utf-8")
    report = check_project({"CREWLINE_PROJECT": str(tmp_path)})
    assert any("[mcp] allowed_hosts must be a list" in e for e in report.errors), report.errors
    (tmp_path / "crewline.toml").write_text(
        '[mcp]\nallowed_origins = ["ops.example.com"]\nallowed_host = []\n', encoding="utf-8"
    )
    report = check_project({"CREWLINE_PROJECT": str(tmp_path)})
    assert any("allowed_host" in e and "unknown" in e for e in report.errors), report.errors
    (tmp_path / "crewline.toml").write_text(
        '[mcp]\nallowed_origins = ["ops.example.com"]\n', encoding="utf-8"
    )
    report = check_project({"CREWLINE_PROJECT": str(tmp_path)})
    assert any("scheme://host" in e for e in report.errors), report.errors
