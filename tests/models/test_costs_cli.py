"""``crewline costs`` over real call records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from crewline.cli import main
from crewline.models import Gateway, ModelsConfig
from crewline.store import open_database
from crewline.testing import ScriptedModel


async def _spend(url: str) -> None:
    db = open_database(url)
    config = ModelsConfig.parse(
        {
            "providers": {"paid": {"format": "openai", "base_url": "http://127.0.0.1:9/v1"}},
            "prices": {"paid/m": {"input": 1000.0, "output": 1000.0}},
            "budgets": {"workflow": {"triage": 5.0}},
        }
    )
    gw = Gateway(
        config,
        db,
        adapters={"paid": ScriptedModel(default="two words"), "free": ScriptedModel(default="x")},
        wait_for_records=True,
    )
    await gw.complete("paid/m", "one", budget_scope={"workflow": "triage"})
    await gw.complete("paid/m", "one two", budget_scope={"workflow": "digest"}, temperature=0)
    await gw.complete("paid/m", "one two", budget_scope={"workflow": "digest"}, temperature=0)  # cache hit
    await gw.complete("free/m", "unpriced?")
    await gw.aclose()
    db.close()


async def test_costs_by_day_model_workflow(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    await _spend(sqlite_url)
    (tmp_path / "crewline.toml").write_text("[models.budgets]\nworkflow = { triage = 5.0 }\n")
    monkeypatch.setenv("CREWLINE_PROJECT_DIR", str(tmp_path))
    monkeypatch.setenv("CREWLINE_DATABASE_URL", sqlite_url)
    runner = CliRunner()
    result = runner.invoke(main, ["costs", "--budgets"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "spend by day" in out and "spend by model" in out and "spend by workflow" in out
    assert "paid/m" in out and "triage" in out and "workflow:triage" in out and "$5.0000" in out
    data = json.loads(runner.invoke(main, ["costs", "--by", "workflow", "--json"]).output)
    rows = {r["workflow"]: r for r in data["workflow"]}
    assert rows["digest"]["calls"] == 2 and rows["digest"]["cache_hits"] == 1
    assert rows["triage"]["cost"] == pytest.approx((1 + 2) * 1000 / 1e6)


def test_costs_without_gateway_tables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CREWLINE_DATABASE_URL", f"sqlite:///{tmp_path}/empty.db")
    result = CliRunner().invoke(main, ["costs"])
    assert result.exit_code == 2 and "crewline db upgrade" in result.output
