"""The promotion gate: production needs a passing evaluation on the dataset's current version; --force is
audited. Through the function, the CLI and the API."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable

import pytest

from crewline.config import Settings
from crewline.errors import InvalidInput, PromotionRefused
from crewline.evals.gate import Override, label_prompt, overrides
from crewline.evals.runner import Tools
from crewline.evals.targets import EvalAsk, evaluate
from crewline.flows.prompts import resolve, set_label

from ..server.conftest import Api, api, api_factory  # noqa: F401  (the server fixtures)
from .conftest import CASES, PROMPT_V2, Project, classifier, write_dataset

GATE = {"mail": {"prompt": "classify", "dataset": "mail", "required": True, "min_score": 0.9}}


def _gated(project: Project) -> Settings:
    return Settings(
        project_dir=project.dir, database_url=project.settings.database_url, sections={"evals": GATE}
    )


async def _evaluate(project: Project, settings: Settings, right: bool) -> None:
    gateway = project.gateway(classifier(right))
    try:
        ask = EvalAsk("mail", prompt="classify@latest")
        await evaluate(settings, project.db, Tools(gateway), ask, lambda _: None)
    finally:
        await gateway.aclose()


async def test_production_waits_for_a_passing_evaluation_of_that_version(project: Project) -> None:
    settings = _gated(project)
    version = project.write_prompt(PROMPT_V2)
    with pytest.raises(
        PromotionRefused, match=r"\[evals.mail\] requires a passing evaluation.*there is none"
    ):
        label_prompt(project.db, settings, "classify", "production", version)
    label_prompt(project.db, settings, "classify", "candidate", version)  # other labels are not gated
    await _evaluate(project, settings, right=False)
    with pytest.raises(PromotionRefused, match=r"failed \(exact 0.500 below 0.9\)"):
        label_prompt(project.db, settings, "classify", "production", version)
    assert resolve(project.db, "classify@production").version != version
    await _evaluate(project, settings, right=True)
    change = label_prompt(project.db, settings, "classify", "production", version)
    assert change.version == version == resolve(project.db, "classify@production").version
    # A changed dataset is a new version: the old evaluation no longer counts.
    write_dataset(project.dir, CASES[:4])
    with pytest.raises(PromotionRefused, match="there is none"):
        label_prompt(project.db, settings, "classify", "production", "production")
    assert set_label(project.db, "classify", "production", version).version == version  # no gate: no check


def test_force_is_audited_and_needs_a_reason(project: Project) -> None:
    settings = _gated(project)
    version = project.write_prompt(PROMPT_V2)
    with pytest.raises(InvalidInput, match="--force needs --reason"):
        label_prompt(project.db, settings, "classify", "production", version, force=Override("ann", " "))
    label_prompt(project.db, settings, "classify", "production", version, force=Override("ann", "hotfix"))
    [audit] = overrides(project.db, "classify")
    assert (audit["who"], audit["reason"], audit["version"], audit["label"]) == (
        "ann",
        "hotfix",
        version,
        "production",
    )


def test_the_cli_and_the_api_go_through_the_gate(
    project: Project,
    api_factory: Callable[..., Api],  # noqa: F811
) -> None:
    version = project.write_prompt(PROMPT_V2)
    toml = f'[crewline]\ndatabase_url = "{project.settings.database_url}"\n[evals.mail]\nprompt = "classify"\ndataset = "mail"\nrequired = true\n'
    (project.dir / "crewline.toml").write_text(toml)
    env = {**os.environ, "CREWLINE_PROJECT": str(project.dir)}
    cmd = [sys.executable, "-m", "crewline", "prompts", "label", "classify", "production", version]
    refused = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert refused.returncode == 1 and "crewline eval run mail --prompt classify@" in refused.stderr
    forced = subprocess.run(
        [*cmd, "--force", "--reason", "demo"], capture_output=True, text=True, env=env, timeout=120
    )
    assert forced.returncode == 0, forced.stderr
    assert overrides(project.db)[0]["reason"] == "demo"
    server: Api = api_factory({"evals": GATE})  # the same project directory and database
    answer = server.http.put("/api/v1/prompts/classify/labels/production", json={"version": "latest"})
    assert answer.status_code == 409 and answer.json()["error"]["type"] == "promotion_refused", answer.text
    body = {"version": "latest", "force": True, "reason": "api demo"}
    assert server.http.put("/api/v1/prompts/classify/labels/production", json=body).status_code == 200
    assert overrides(project.db)[0]["who"].startswith("key ")
    reviewer = server.as_key(server.key("reviewer"))
    assert reviewer.put("/api/v1/prompts/classify/labels/x", json={"version": "latest"}).status_code == 403
