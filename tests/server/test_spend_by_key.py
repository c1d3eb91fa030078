"""Proxy calls are recorded with their key, and `crewline costs --by key` shows spend per key by name."""

from __future__ import annotations

import json
import time

import pytest
from click.testing import CliRunner

from crewline.cli import main
from crewline.testing import FakeProvider

from .conftest import Api
from .test_proxy import fake, oai, proxy  # noqa: F401  (fixtures)


def test_costs_by_key_names_each_proxy_key(
    proxy: Api,  # noqa: F811
    fake: FakeProvider,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    alice = proxy.key("proxy", name="alice")
    bob = proxy.key("proxy", name="bob", budget_per_day=5.0)  # budgeted: its ledger scope carries the day
    for token, calls in ((alice, 1), (bob, 2)):
        for _ in range(calls):
            oai(proxy, token).chat.completions.create(
                model="fast", messages=[{"role": "user", "content": "hi"}]
            )
    deadline = time.monotonic() + 60  # call records are written in the background, batched
    while len(proxy.http.get("/api/v1/calls").json()) < 3:
        assert time.monotonic() < deadline, "the calls were not recorded"
        time.sleep(0.05)
    monkeypatch.setenv("CREWLINE_DATABASE_URL", proxy.app.settings.database_url)
    monkeypatch.setenv("CREWLINE_PROJECT", str(proxy.app.settings.project_dir))
    result = CliRunner().invoke(main, ["costs", "--by", "key", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.output)["key"]}
    assert set(rows) == {"alice", "bob"}
    assert rows["alice"]["calls"] == 1 and rows["bob"]["calls"] == 2
    assert rows["bob"]["key"] == bob.split("_")[1]
    text = CliRunner().invoke(main, ["costs", "--by", "key"]).output
    assert "spend by key" in text and f"bob ({bob.split('_')[1]})" in text
