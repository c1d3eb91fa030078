"""``crewline stats`` over a known set of calls, runs, reviews and searches."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from crewline.cli import main
from crewline.store import open_database

from ._seed import seed


@pytest.fixture
def runner(db_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> CliRunner:
    db = open_database(db_url)
    try:
        seed(db, time.time())
    finally:
        db.close()
    monkeypatch.setenv("CREWLINE_PROJECT_DIR", str(tmp_path))
    monkeypatch.setenv("CREWLINE_DATABASE_URL", db_url)
    return CliRunner()


def test_stats_tables_and_json(runner: CliRunner) -> None:
    result = runner.invoke(main, ["stats", "--by", "model"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "model calls, last 24h" in out and "p/a" in out and "p/b" in out and "$2.0000" in out
    assert "RateLimited" in out and "runs completed: 2" in out and "queued now: mail 1" in out
    assert "reviews pending: 1" in out and "memory searches: 4, with a hit 75.0%" in out
    assert "histograms" not in out
    week = runner.invoke(main, ["stats", "--since", "7d"]).output
    assert "percentiles from hourly histograms, within 1%" in week and "$7.0000" in week
    data = json.loads(runner.invoke(main, ["stats", "--since", "7d", "--by", "workflow", "--json"]).output)
    assert {g["workflow"]: g["calls"] for g in data["groups"]} == {"-": 1, "digest": 10, "triage": 100}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "nonsense"], "since 'nonsense' is not a time span: give a number with m, h, d or w"),
        (["--by", "colour"], "by 'colour' is not a grouping: use one of model, workflow, key, day, hour"),
    ],
)
def test_bad_input_is_one_line(runner: CliRunner, args: list[str], message: str) -> None:
    result = runner.invoke(main, ["stats", *args])
    assert result.exit_code == 2
    [line] = result.output.strip().splitlines()
    assert line.startswith(f"crewline: error: {message}")
