"""`/api/v1/evals` on a running server: list, show with cases, compare; permissions and bad ids."""

from __future__ import annotations

import pytest

from crewline.evals.results import CaseResult, EvalRun, create_run, finish_run, new_eval_id, record_case

from ..server.conftest import Api, api, api_factory  # noqa: F401  (the server fixtures)


async def _stored(server: Api, answers: list[float]) -> str:
    db = server.app.db
    run_id = new_eval_id()
    create_run(db, EvalRun(run_id, "mail", "prompt:classify@abc", "mail", "v1", {"scorers": ["exact"]}))
    for i, value in enumerate(answers):
        scores = {"exact": {"value": value, "passed": value == 1, "reason": ""}}
        await record_case(db, run_id, CaseResult(f"c{i}", 0, "test", "spam", scores, cost=0.01))
    finish_run(db, run_id, "completed", True, {"scorers": {"exact": {"mean": sum(answers) / len(answers)}}})
    return run_id


async def test_list_show_and_compare(api: Api) -> None:  # noqa: F811
    a = await _stored(api, [0.0] * 6)
    b = await _stored(api, [1.0] * 6)
    listed = api.http.get("/api/v1/evals").json()
    assert [r["id"] for r in listed] == [b, a]
    shown = api.http.get(f"/api/v1/evals/{a}").json()
    assert (shown["status"], len(shown["cases"]), shown["cost"]) == ("completed", 6, pytest.approx(0.06))
    verdict = api.http.get(f"/api/v1/evals/{a}/compare/{b}").json()
    assert (verdict["verdict"], verdict["wins"]) == ("improved", 6)
    missing = api.http.get("/api/v1/evals/ev_000000000000")
    assert missing.status_code == 422 and "no evaluation" in missing.text
    assert api.http.get("/api/v1/evals/not-an-id").status_code == 422
    reviewer = api.as_key(api.key("reviewer"))
    assert reviewer.get("/api/v1/evals").status_code == 403
