"""`crewline config check` and the same check when `serve` / `worker` start: every section read up front."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from crewline.models.config import models_problems

ROOT = Path(__file__).resolve().parents[1]

BROKEN = """\
[crewline]
lease_second = "15s"

[models]
max_tokens = "lots"

[models.tiers]
order = ["cheap"]
cheap = "nosuch/model-1"

[models.budgets]
day = "five dollars"

[modles]
default = "cheap"
"""


def _crewline(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CREWLINE_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT)])
    return subprocess.run(
        [sys.executable, "-m", "crewline", *args],
        env={**env, "CREWLINE_DATABASE_URL": f"sqlite:///{project}/db.sqlite"},
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_config_check_lists_every_problem_with_file_key_and_what_is_accepted(tmp_path: Path) -> None:
    (tmp_path / "crewline.toml").write_text(BROKEN)
    proc = _crewline(tmp_path, "config", "check")
    assert proc.returncode == 2, proc.stderr
    out = proc.stdout
    assert "crewline.toml: error: [models] max_tokens must be a positive integer, got 'lots'" in out
    assert (
        "crewline.toml: error: [models.budgets] day must be an amount in USD >= 0 (a number, e.g. 5 or 0.5), got 'five dollars'"
        in out
    )
    assert "crewline.toml: warning: unknown section [modles] (did you mean 'models'?)" in out
    assert (
        "crewline.toml: warning: unknown key [crewline] lease_second (did you mean 'lease_seconds'?)" in out
    )
    assert "Traceback" not in proc.stderr


def test_a_tier_on_an_unknown_provider_is_named(tmp_path: Path) -> None:
    (tmp_path / "crewline.toml").write_text(
        '[models.tiers]\norder = ["cheap"]\ncheap = "opneai/gpt-4o-mini"\n'
    )
    proc = _crewline(tmp_path, "config", "check")
    assert proc.returncode == 2
    assert (
        "[models] cheap = 'opneai/gpt-4o-mini': provider 'opneai' is not configured (did you mean 'openai'?)"
        in (proc.stdout)
    )


def test_a_sound_project_checks_ok(tmp_path: Path) -> None:
    (tmp_path / "crewline.toml").write_text((ROOT / "examples" / "crewline.toml").read_text())
    proc = _crewline(tmp_path, "config", "check")
    assert proc.returncode == 0, proc.stdout
    assert proc.stdout.strip() == "crewline.toml: ok"


@pytest.mark.parametrize("command", [["worker"], ["serve", "--port", "0"]])
def test_serve_and_worker_refuse_to_start_on_a_broken_config(tmp_path: Path, command: list[str]) -> None:
    (tmp_path / "crewline.toml").write_text(BROKEN)
    proc = _crewline(tmp_path, *command)
    assert proc.returncode == 2
    assert "[models] max_tokens must be a positive integer" in proc.stderr
    assert "crewline config check" in proc.stderr and "Traceback" not in proc.stderr


def test_models_problems_reads_each_key_on_its_own() -> None:
    problems = models_problems({"max_tokens": "lots", "timeout": "soon", "budgets": {"day": "five dollars"}})
    assert len(problems) == 3
    assert models_problems({"deployments": {"d": {"provider": "nosuch", "model": "m"}}}) == [
        "[models.deployments.d] provider 'nosuch' is not a configured provider; known: anthropic, deepseek, "
        "gemini, groq, llamacpp, local, mistral, ollama, openai, openrouter, together, vllm"
    ]
    assert models_problems({"default": "strong"})[0].startswith("[models] default = 'strong' is not an alias")


def test_a_bad_vector_index_setting_is_named_with_what_is_accepted(tmp_path: Path) -> None:
    (tmp_path / "crewline.toml").write_text('[memory]\nvector_index = "ivfflat"\nhnsw_ef_search = 5000\n')
    proc = _crewline(tmp_path, "config", "check")
    assert proc.returncode == 2, proc.stderr
    assert "[memory] vector_index must be one of auto, hnsw, exact; got 'ivfflat'" in proc.stdout
    (tmp_path / "crewline.toml").write_text('[memory]\nvector_index = "exact"\nhnsw_ef_search = 5000\n')
    proc = _crewline(tmp_path, "config", "check")
    assert proc.returncode == 2 and "hnsw_ef_search must be a whole number from 1 to 1000" in proc.stdout
    (tmp_path / "crewline.toml").write_text('[memory]\nvector_index = "hnsw"\nhnsw_ef_search = 200\n')
    assert _crewline(tmp_path, "config", "check").returncode == 0
