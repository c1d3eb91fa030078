"""`crewline runs pause|resume`, `crewline workflows|queues ...` and `crewline flags ...` end to end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from . import test_cli


@pytest.fixture
def crewline(sqlite_url: str, tmp_path: Path) -> Any:
    """The `crewline` command over a fresh SQLite database, with the example app (see test_cli.cli)."""
    return test_cli.cli.__wrapped__(sqlite_url, tmp_path)


ONBOARD = '{"id": "c1", "email": "a@b.co"}'


def test_pause_and_resume_a_run_and_refuse_a_finished_one(crewline: Any) -> None:
    crewline("db", "upgrade")
    rid = crewline("run", "onboard", "--input", ONBOARD).stdout.strip()
    assert crewline("runs", "pause", rid).stdout == "paused\n"
    assert json.loads(crewline("runs", "show", rid, "--json").stdout)["status"] == "paused"
    assert crewline("runs", "resume", rid).stdout == "resumed\n"
    crewline("runs", "cancel", rid)
    refused = crewline("runs", "pause", rid, check=2)
    assert (
        refused.stderr
        == f"crewline: error: run {rid} is already cancelled; only an unfinished run can be paused\n"
    )
    assert json.loads(crewline("runs", "show", rid, "--json").stdout)["status"] == "cancelled"


def test_disable_and_enable_a_workflow(crewline: Any) -> None:
    crewline("db", "upgrade")
    rid = crewline("run", "onboard", "--input", ONBOARD).stdout.strip()
    out = crewline("workflows", "disable", "onboard", "--pause-running").stdout
    assert out == "workflow onboard disabled; 1 run(s) paused\n"
    refused = crewline("run", "onboard", "--input", ONBOARD, check=2).stderr
    assert refused == (
        "crewline: error: workflow 'onboard' is disabled and starts no runs: "
        "enable it with `crewline workflows enable onboard`\n"
    )
    switches = json.loads(crewline("workflows", "switches", "--json").stdout)
    assert [(s["name"], s["paused"], s["disabled"]) for s in switches] == [("onboard", True, True)]
    unknown = crewline("workflows", "enable", "nosuch", check=2).stderr
    assert (
        unknown.startswith("crewline: error: unknown workflow 'nosuch' (known: ") and unknown.count("\n") == 1
    )
    assert crewline("workflows", "enable", "onboard").stdout == "workflow onboard enabled; 1 run(s) resumed\n"
    assert json.loads(crewline("runs", "show", rid, "--json").stdout)["status"] == "pending"
    assert crewline("queues", "pause", "outbox").stdout == "queue outbox paused; 1 run(s) paused\n"
    assert "unknown queue 'nosuch'" in crewline("queues", "resume", "nosuch", check=2).stderr


def test_flags_set_get_list_unset(crewline: Any) -> None:
    crewline("db", "upgrade")
    assert crewline("flags", "set", "agents.enabled", "false").stdout == "agents.enabled = false\n"
    assert crewline("flags", "set", "greeting", "hello there").stdout == 'greeting = "hello there"\n'
    assert json.loads(crewline("flags", "get", "agents.enabled", "--json").stdout)["value"] is False
    listed = json.loads(crewline("flags", "list", "--json").stdout)
    assert [(f["name"], f["value"]) for f in listed] == [
        ("agents.enabled", False),
        ("greeting", "hello there"),
    ]
    bad = crewline("flags", "set", "limits", "{x", check=2).stderr
    assert bad.startswith("crewline: error: flag value is not valid JSON") and bad.count("\n") == 1
    assert crewline("flags", "unset", "agents.enabled").stdout == "agents.enabled unset\n"
    missing = crewline("flags", "get", "agents.enabled", check=2).stderr
    assert missing == "crewline: error: flag 'agents.enabled' is not set: see `crewline flags list`\n"
    help_text = crewline("--help").stdout
    assert all(name in help_text for name in ("workflows", "queues", "flags"))
    assert "pause" in crewline("runs", "--help").stdout and "resume" in crewline("runs", "--help").stdout
