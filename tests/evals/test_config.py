"""`crewline config check` reads [evals.NAME] and [shadow.WORKFLOW], naming the section and key at fault."""

from __future__ import annotations

from pathlib import Path

import pytest

from crewline.cli.config import check_project
from crewline.errors import ConfigError
from crewline.evals.config import parse_evals
from crewline.flows.shadow import parse_shadow

BAD = """
[evals.triage]
dataset = "triage"
min_score = 1.5

[evals.reply]
dataset = "reply"
required = true

[shadow.triage]
workflow = "triage_v2"
sample = 2
"""


def test_config_check_names_each_bad_key(tmp_path: Path) -> None:
    (tmp_path / "crewline.toml").write_text(BAD)
    report = check_project({"CREWLINE_PROJECT": str(tmp_path)})
    assert report.errors == [
        "[evals.triage] min_score must be a number between 0 and 1, not 1.5",
        "[evals.reply] required = true needs prompt = the prompt it guards",
        "[shadow.triage] sample must be a share between 0 and 1, not 2",
    ]


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"x": {"dataset": "x", "scorers": ["exactly"]}}, r"\[evals.x\] scorers: unknown scorer 'exactly'"),
        ({"x": {"dataset": "x", "required": True}}, r"\[evals.x\] required = true needs prompt ="),
        ({"x": {"prompt": "x"}}, r"\[evals.x\] dataset is missing"),
        ({"x": {"dataset": "x", "splt": "test"}}, r"\[evals.x\] splt: unknown key"),
    ],
)
def test_bad_eval_sections(section: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_evals(section)


def test_bad_shadow_sections() -> None:
    with pytest.raises(ConfigError, match=r"\[shadow.a\] workflow must name the candidate"):
        parse_shadow({"a": {"workflow": "a"}})
    with pytest.raises(ConfigError, match=r"\[shadow.a\] budget: budget 'lots'"):
        parse_shadow({"a": {"workflow": "b", "budget": "lots"}})
    assert parse_shadow({"a": {"workflow": "b", "budget": "$1/day"}})["a"].daily_budget == 1.0
