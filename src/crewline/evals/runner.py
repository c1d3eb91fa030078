"""Running an evaluation: every case of a dataset through a target, ``repeat`` times, ``concurrency`` at
once, within a budget, each result stored as it finishes.

A prompt target renders the prompt version with the case's input and calls the gateway with the cache
off (``CallOptions(cache=False)``): a repeat that read a cached reply would measure nothing. The budget is
checked before each case starts, against what finished cases cost plus, for each case in flight, the
costliest case so far; once it would be passed no new case starts, the run is stored as ``over_budget``
with the cases it has, and says so. Each finished case is written at once, so an evaluation stopped by a
crash is resumed (:func:`run_eval` with ``resume=``) from the stored cases: what was paid for is not
asked again, and the dataset must still be the version it started on.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import CrewlineError, InvalidInput
from ..flows import prompts
from ..models import CallOptions, CompletionRequest
from ..models.call_log import call_rows
from ..store import Conn, Database
from .datasets import Case, Dataset
from .results import (
    CaseResult,
    EvalRun,
    EvalStatus,
    case_results,
    create_run,
    finish_run,
    get_run,
    new_eval_id,
    record_case,
)
from .scorers import Embed, Judge, ScoreInput, Scorer, parse_scorer
from .verdicts import case_means, compare, summarize

if TYPE_CHECKING:
    from ..models import Gateway

__all__ = [
    "Baseline",
    "Outcome",
    "Plan",
    "PromptTarget",
    "RunStarter",
    "Target",
    "Tools",
    "WorkflowTarget",
    "run_eval",
]


@dataclass(frozen=True)
class Plan:
    """What to evaluate and how; stored with the run so ``--resume`` repeats it exactly."""

    name: str
    target: str  # "prompt:NAME@VERSION"
    dataset: str
    scorers: tuple[str, ...] = ("exact",)
    model: str | None = None
    repeat: int = 1
    concurrency: int = 4
    budget: float | None = None
    split: str | None = None
    min_score: float | None = None
    judge_model: str | None = None
    temperature: float | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Plan:
        return cls(**{**data, "scorers": tuple(data["scorers"])})

    def check(self) -> None:
        if self.repeat < 1 or self.concurrency < 1:
            raise InvalidInput("--repeat and --concurrency must be at least 1")
        if self.min_score is not None and not 0 <= self.min_score <= 1:
            raise InvalidInput(f"--min-score must be between 0 and 1, got {self.min_score}")
        if self.budget is not None and self.budget <= 0:
            raise InvalidInput(f"--budget must be more than $0, got {self.budget}")
        for spec in self.scorers:
            parse_scorer(spec)


@dataclass(frozen=True)
class Outcome:
    """What a target answered for one case."""

    output: Any
    cost: float
    latency_ms: float


class Target(Protocol):
    """Something that answers a case: a prompt with a model, or a workflow run in shadow."""

    async def answer(self, case: Case) -> Outcome: ...


class RunStarter(Protocol):
    """How a workflow target starts a run and waits for it (the App, passed in from above)."""

    async def start(self, workflow: str, input: Any = None, *, shadow: bool = False) -> str: ...

    async def result(self, run_id: str, *, timeout: float | None = None) -> Any: ...


@dataclass
class Tools:
    """What the runner and its scorers call: the gateway, the memory embedder, a progress callback, and
    for a workflow target what starts its runs."""

    gateway: Gateway
    embed: Embed | None = None
    progress: Callable[[int, int], None] | None = None
    runs: RunStarter | None = None


class WorkflowTarget:
    """A workflow run on each case's input as a shadow run: it reads and thinks, and records the
    irreversible calls it would have made instead of making them."""

    def __init__(self, db: Database, runs: RunStarter, workflow: str, timeout: float = 600.0) -> None:
        self.db = db
        self.runs = runs
        self.workflow = workflow
        self.timeout = timeout

    async def answer(self, case: Case) -> Outcome:
        started = time.perf_counter()
        run_id = await self.runs.start(self.workflow, case.input, shadow=True)
        try:
            output = await self.runs.result(run_id, timeout=self.timeout)
        except TimeoutError as e:
            raise InvalidInput(f"shadow run {run_id} did not finish in {self.timeout:.0f}s") from e
        latency = (time.perf_counter() - started) * 1000
        cost = await self.db.read(lambda conn: run_cost(conn, run_id))
        return Outcome(output, cost, latency)


class PromptTarget:
    """A prompt version rendered with each case's input and sent to ``model`` (else the prompt's own)."""

    def __init__(
        self, db: Database, gateway: Gateway, ref: str, model: str | None, temperature: float | None = None
    ) -> None:
        self.version = prompts.resolve(db, ref)
        self.gateway = gateway
        self.model = model or self.version.model
        self.temperature = temperature

    async def answer(self, case: Case) -> Outcome:
        params = case.input if isinstance(case.input, dict) else {"input": case.input}
        text = prompts.render(self.version, params)
        reply = await self.gateway.complete(
            CompletionRequest(self.model, text, temperature=self.temperature), CallOptions(cache=False)
        )
        return Outcome(_parsed(reply.text), reply.cost, reply.latency_ms)


def run_cost(conn: Conn, run_id: str) -> float:
    """What a run's model calls cost."""
    return float(sum(r.get("cost") or 0.0 for r in call_rows(conn, run_id=run_id, limit=500)))


def _parsed(text: str) -> Any:
    """A reply that is a JSON object or list is scored as data (per-field scorers need it), else as text."""
    stripped = text.strip()
    if stripped[:1] in ("{", "["):
        try:
            return json.loads(stripped)
        except ValueError:
            return text
    return text


@dataclass
class _Spend:
    limit: float | None
    spent: float = 0.0
    costliest: float = 0.0
    in_flight: int = 0
    stopped: bool = False

    def admit(self) -> bool:
        if self.limit is not None and self.spent + (self.in_flight + 1) * self.costliest > self.limit:
            self.stopped = True
        if self.limit is not None and self.spent >= self.limit:
            self.stopped = True
        if not self.stopped:
            self.in_flight += 1
        return not self.stopped

    def settle(self, cost: float) -> None:
        self.in_flight -= 1
        self.spent += cost
        self.costliest = max(self.costliest, cost)


@dataclass
class _Job:
    db: Database
    run_id: str
    plan: Plan
    target: Target
    tools: Tools
    scorers: list[Scorer]
    spend: _Spend
    total: int
    done: int = 0
    results: list[CaseResult] = field(default_factory=list)


@dataclass(frozen=True)
class Baseline:
    """A stored evaluation to compare with: its id and each case's score."""

    run_id: str
    target: str
    scores: Mapping[str, float]


async def run_eval(
    db: Database,
    dataset: Dataset,
    plan: Plan,
    target: Target,
    tools: Tools,
    *,
    resume: str | None = None,
    baseline: Baseline | None = None,
) -> EvalRun:
    """Evaluate ``target`` on ``dataset`` (or resume evaluation ``resume``) and store the outcome, with
    the verdict against ``baseline`` when one is given (a regression fails the evaluation)."""
    plan.check()
    cases = dataset.only(plan.split).cases
    if not cases:
        raise InvalidInput(f"dataset {dataset.name} has no case in split {plan.split!r}")
    run_id, finished = _start(db, dataset, plan, resume)
    todo = [
        (c, r)
        for c in cases
        for r in range(plan.repeat)
        if (c.id, r) not in {(f.case_id, f.repeat) for f in finished}
    ]
    spent = sum(f.cost for f in finished)
    job = _Job(
        db,
        run_id,
        plan,
        target,
        tools,
        [parse_scorer(s, judge_model=plan.judge_model) for s in plan.scorers],
        _Spend(plan.budget, spent),
        len(cases) * plan.repeat,
        len(finished),
        list(finished),
    )
    gate = asyncio.Semaphore(plan.concurrency)
    tasks = [asyncio.create_task(_one(job, gate, case, repeat)) for case, repeat in todo]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:  # a crash stops every case, not only the one it came from
            task.cancel()
    status: EvalStatus = "over_budget" if job.spend.stopped else "completed"
    summary = summarize(job.results, plan.scorers)
    summary["expected_runs"] = job.total
    passed = status == "completed" and _meets(summary, plan.min_score)
    if baseline is not None:
        verdict = compare(case_means(job.results, plan.scorers), baseline.scores)
        summary["baseline"] = {"run_id": baseline.run_id, "target": baseline.target, **verdict.to_json()}
        passed = passed and verdict.verdict != "regressed"
    await asyncio.to_thread(finish_run, db, run_id, status, passed, summary)
    return await asyncio.to_thread(get_run, db, run_id)


def _start(db: Database, dataset: Dataset, plan: Plan, resume: str | None) -> tuple[str, list[CaseResult]]:
    if resume is None:
        run_id = new_eval_id()
        create_run(
            db,
            EvalRun(
                run_id,
                plan.name,
                plan.target,
                dataset.name,
                dataset.version,
                plan.to_json(),
                started_at=time.time(),
            ),
        )
        return run_id, []
    old = get_run(db, resume)
    if old.status != "running":
        raise InvalidInput(f"evaluation {resume} already ended ({old.status}); start a new one")
    if old.dataset_version != dataset.version:
        raise InvalidInput(
            f"evaluation {resume} ran on {old.dataset}@{old.dataset_version} but the file is now "
            f"{dataset.version}; start a new evaluation"
        )
    return resume, case_results(db, resume)


def _meets(summary: Mapping[str, Any], min_score: float | None) -> bool:
    if min_score is None:
        return True
    return all(s["mean"] >= min_score for s in summary["scorers"].values())


async def _one(job: _Job, gate: asyncio.Semaphore, case: Case, repeat: int) -> None:
    async with gate:
        if not job.spend.admit():
            return
        cost = 0.0
        try:
            result = await _measure(job, case, repeat)
            cost = result.cost
        finally:
            job.spend.settle(cost)
        await record_case(job.db, job.run_id, result)
    job.results.append(result)
    job.done += 1
    if job.tools.progress is not None:
        job.tools.progress(job.done, job.total)


async def _measure(job: _Job, case: Case, repeat: int) -> CaseResult:
    try:
        out = await job.target.answer(case)
    except CrewlineError as e:
        return CaseResult(case.id, repeat, case.split, None, {}, f"{type(e).__name__}: {e}")
    scores: dict[str, dict[str, Any]] = {}
    errors: list[str] = []
    cost = out.cost
    given = ScoreInput(case, out.output, _judge(job.tools.gateway), job.tools.embed)
    for scorer in job.scorers:
        try:
            score = await scorer.score(given)
        except Exception as e:  # an operator's scorer may raise anything: the case errs, the run goes on
            errors.append(f"scorer {scorer.name} failed: {type(e).__name__}: {e}")
            continue
        cost += score.cost
        scores[scorer.name] = {"value": score.value, "passed": score.passed, "reason": score.reason}
        if score.fields:
            scores[scorer.name]["fields"] = dict(score.fields)
    error = "; ".join(errors) or None
    return CaseResult(case.id, repeat, case.split, out.output, scores, error, cost, out.latency_ms)


def _judge(gateway: Gateway) -> Judge:
    async def ask(model: str | None, prompt: str) -> tuple[str, float]:
        reply = await gateway.complete(
            CompletionRequest(model, prompt, max_tokens=200), CallOptions(cache=False)
        )
        return reply.text, reply.cost

    return ask
