"""`crewline eval` as a CI job runs it: a subprocess against the fake provider, exit codes, list/show/compare."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from crewline.testing import FakeProvider

from .conftest import write_dataset

PROMPT = "---\nparams: [text]\nmodel: fake/m\n---\nClassify: {{ text }}\n"
TOML = """[crewline]
database_url = "sqlite:///{db}"

[models]
max_tokens = 20
[models.providers.fake]
format = "openai"
base_url = "{url}/v1"
api_key_env = "FAKE_KEY"
[models.prices]
"fake/m" = {{ input = 0.0, output = 100.0 }}

[evals.mail]
prompt = "classify"
dataset = "mail"
min_score = 0.9
"""


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    with FakeProvider(api_key="sk-test") as server:
        yield server


def _project(tmp_path: Path, fake: FakeProvider) -> Path:
    (tmp_path / "prompts").mkdir()
    (tmp_path / "evals").mkdir()
    (tmp_path / "prompts" / "classify.md").write_text(PROMPT)
    write_dataset(tmp_path, [("free money", "spam"), ("lunch?", "ham")])
    (tmp_path / "crewline.toml").write_text(TOML.format(db=tmp_path / "c.db", url=fake.url))
    return tmp_path


def _cli(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CREWLINE_PROJECT": str(project), "FAKE_KEY": "sk-test"}
    return subprocess.run(
        [sys.executable, "-m", "crewline", "eval", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_eval_run_exit_codes_and_stored_results(tmp_path: Path, fake: FakeProvider) -> None:
    project = _project(tmp_path, fake)
    for text in ("spam", "ham", "spam", "spam"):
        fake.reply(text=text, output_tokens=2)
    good = _cli(project, "run", "mail", "--json", "--concurrency", "1")
    assert good.returncode == 0, good.stderr
    first = json.loads(good.stdout)
    assert (first["status"], first["passed"], first["summary"]["cases"]) == ("completed", True, 2)
    bad = _cli(project, "run", "mail", "--concurrency", "1")  # answers "spam" to "lunch?": 50% < 90%
    assert bad.returncode == 1, bad.stderr
    assert "exact   0.500" in bad.stdout and "FAILED" in bad.stdout
    assert "$0.0004" in bad.stdout  # 2 cases x 2 output tokens at $100 per 1,000
    listed = _cli(project, "list", "--json")
    assert [r["passed"] for r in json.loads(listed.stdout)] == [False, True]
    shown = _cli(project, "show", first["id"], "--cases")
    assert shown.returncode == 0 and first["id"] in shown.stdout
    compared = _cli(project, "compare", first["id"], json.loads(listed.stdout)[0]["id"], "--json")
    assert json.loads(compared.stdout)["losses"] == 1


def test_bad_usage_exits_2_with_a_clear_message(tmp_path: Path, fake: FakeProvider) -> None:
    project = _project(tmp_path, fake)
    (project / "evals" / "mail.jsonl").write_text('{"input": {"text": "x"}, "expected": "ham"}\nnot json\n')
    strict = _cli(project, "run", "mail", "--strict")
    assert strict.returncode == 2
    assert "mail.jsonl line 2 is not valid JSON" in strict.stderr and "Traceback" not in strict.stderr
    assert _cli(project, "run", "mail", "--scorer", "nope").returncode == 2
    missing = _cli(project, "show", "ev_nothere")
    assert missing.returncode == 2 and "no evaluation 'ev_nothere'" in missing.stderr
