"""Evaluation runs on the scripted model: repeats re-call, errors, budgets, resuming, verdicts, storage."""

from __future__ import annotations

import pytest

from crewline.evals import results
from crewline.evals.runner import Tools
from crewline.evals.targets import EvalAsk, evaluate
from crewline.evals.verdicts import compare, compare_runs, sign_test
from crewline.testing import ScriptedModel

from .conftest import CASES, PROMPT_V2, Project, classifier

pytestmark = pytest.mark.usefixtures("db_url")


async def _run(
    project: Project, model: ScriptedModel, notes: list[str] | None = None, **ask: object
) -> results.EvalRun:
    gateway = project.gateway(model, ask.pop("budgets", None))  # type: ignore[arg-type]
    try:
        given = EvalAsk(**{"target": "classify", "dataset": "mail", **ask})  # type: ignore[arg-type]
        return await evaluate(project.settings, project.db, Tools(gateway), given, (notes or []).append)
    finally:
        await gateway.aclose()


async def test_repeats_call_the_model_again_and_are_stored(project: Project) -> None:
    model = classifier()
    # Temperature 0 makes the requests cacheable (the cache is on by default): repeats must still call.
    run = await _run(project, model, repeat=3, concurrency=4, min_score=0.9, temperature=0.0)
    assert len(model.requests) == len(CASES) * 3  # no repeat was answered from the cache
    assert (run.status, run.passed) == ("completed", True)
    assert run.summary["scorers"]["exact"]["mean"] == 1.0
    assert run.summary["runs"] == len(CASES) * 3 and run.cost > 0
    stored = results.get_run(project.db, run.id)
    assert (stored.passed, stored.summary["cases"], stored.cost) == (
        True,
        len(CASES),
        pytest.approx(run.cost),
    )
    cases = results.case_results(project.db, run.id)
    assert len(cases) == len(CASES) * 3 and {c.output for c in cases} == {"spam", "ham"}
    assert [r.id for r in results.list_runs(project.db, target="prompt:classify")] == [run.id]


async def test_below_min_score_fails_and_a_raising_scorer_errs_only_its_case(project: Project) -> None:
    scorers = ("exact", "python:tests.evals.scorer_fns:explodes")
    run = await _run(project, classifier(right=False), min_score=0.9, scorers=scorers)
    assert run.passed is False and run.status == "completed"
    assert run.summary["scorers"]["exact"]["mean"] == 0.5
    assert run.summary["errored"] == len(CASES)  # every case ran; each is marked with the reason
    errors = {c.error for c in results.case_results(project.db, run.id)}
    assert errors == {"scorer python:tests.evals.scorer_fns:explodes failed: RuntimeError: the scorer broke"}


async def test_over_budget_stops_with_partial_results_stored(project: Project) -> None:
    model = classifier()
    run = await _run(project, model, budget=0.0025, concurrency=1)
    assert run.status == "over_budget" and run.passed is False
    done = results.case_results(project.db, run.id)
    assert 0 < len(done) < len(CASES) == len(model.requests) + (len(CASES) - len(done))
    assert results.get_run(project.db, run.id).status == "over_budget"


class Crash(BaseException):
    """Stands for the process dying: nothing in the runner catches it."""


async def test_a_crash_mid_run_resumes_without_paying_finished_cases_again(project: Project) -> None:
    first = ScriptedModel("spam", "ham", "spam", Crash(), default="ham")
    with pytest.raises(Crash):
        await _run(project, first, concurrency=1)
    [stopped] = results.list_runs(project.db)
    assert stopped.status == "running"
    assert len(results.case_results(project.db, stopped.id)) == 3
    second = classifier()
    run = await _run(project, second, resume=stopped.id, target=None)
    assert run.id == stopped.id and run.status == "completed"
    assert len(second.requests) == len(CASES) - 3  # only the cases that had not finished
    assert len(results.case_results(project.db, run.id)) == len(CASES)
    assert results.get_run(project.db, run.id).cost == pytest.approx(run.cost)


async def test_baseline_verdicts_are_paired_and_stored(project: Project) -> None:
    production = (await _run(project, classifier(right=False))).id  # the stored baseline
    project.write_prompt(PROMPT_V2)
    notes: list[str] = []
    better = await _run(project, classifier(), notes, prompt="classify@latest", baseline="production")
    verdict = better.summary["baseline"]
    assert (verdict["run_id"], verdict["verdict"], verdict["wins"], verdict["losses"]) == (
        production,
        "improved",
        6,
        0,
    )
    assert notes == []  # the baseline's stored evaluation was used, not run again
    worse = await _run(project, classifier(right=False), prompt="classify@latest", baseline="production")
    # Worse than nothing is not possible here: the same answers as the baseline are inconclusive.
    assert worse.summary["baseline"]["verdict"] == "inconclusive" and worse.passed is True
    back = compare_runs(project.db, better.id, worse.id)
    assert (back["verdict"], back["losses"], back["p_value"]) == ("regressed", 6, pytest.approx(2 / 64))


def test_the_sign_test() -> None:
    assert sign_test(0, 0) == 1.0
    assert sign_test(6, 0) == pytest.approx(2 / 64)
    assert sign_test(4, 0) == pytest.approx(0.125)
    cand = {str(i): 1.0 for i in range(10)}
    base = {str(i): 0.0 for i in range(10)}
    assert compare(base, cand).verdict == "regressed"
    assert compare(cand, base).verdict == "improved"
    assert compare(cand, cand).verdict == "inconclusive"
