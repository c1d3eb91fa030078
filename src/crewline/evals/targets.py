"""From what an operator names to what the runner runs: ``crewline eval run TARGET`` reads TARGET as an
``[evals.NAME]`` section, else as a prompt (``NAME`` or ``NAME@label``); its baseline is another version
of the same prompt, compared through its stored evaluation on the same dataset version, evaluated first
when there is none.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from ..errors import InvalidInput
from ..flows import prompts
from .config import EvalConfig, parse_evals
from .datasets import Dataset, load_dataset
from .results import EvalRun, case_results, latest_run
from .runner import Baseline, Plan, PromptTarget, Target, Tools, WorkflowTarget, run_eval
from .verdicts import case_means

if TYPE_CHECKING:
    from ..config import Settings
    from ..store import Database

__all__ = ["EvalAsk", "evaluate", "prompt_target"]


@dataclass(frozen=True)
class EvalAsk:
    """What ``crewline eval run`` was asked; None means "from ``[evals.NAME]``, else the default"."""

    target: str | None
    dataset: str | None = None
    prompt: str | None = None
    model: str | None = None
    scorers: tuple[str, ...] = ()
    repeat: int = 1
    concurrency: int = 4
    min_score: float | None = None
    baseline: str | None = None
    budget: float | None = None
    split: str | None = None
    strict: bool = False
    resume: str | None = None
    temperature: float | None = None


def prompt_target(name: str, version: str) -> str:
    return f"prompt:{name}@{version}"


def _config(settings: Settings, target: str) -> EvalConfig | None:
    return parse_evals(settings.sections.get("evals")).get(target)


WORKFLOW = "workflow:"


def plan_for(settings: Settings, db: Database, ask: EvalAsk) -> tuple[Plan, Dataset]:
    assert ask.target is not None
    if ask.target.startswith(WORKFLOW):
        return _workflow_plan(settings, ask)
    conf = _config(settings, ask.target)
    ref = ask.prompt or (conf.prompt if conf is not None and conf.prompt else ask.target)
    dataset_name = ask.dataset or (conf.dataset if conf is not None else None)
    if dataset_name is None:
        raise InvalidInput(
            f"no dataset for {ask.target!r}: give --dataset, or dataset = in [evals.{ask.target}]"
        )
    version = prompts.resolve(db, ref)
    dataset = load_dataset(settings, dataset_name, strict=ask.strict)
    plan = Plan(
        name=conf.name if conf is not None else version.name,
        target=prompt_target(version.name, version.version),
        dataset=dataset.name,
        scorers=ask.scorers or (conf.scorers if conf is not None else ("exact",)),
        model=ask.model or (conf.model if conf is not None else None),
        repeat=ask.repeat,
        concurrency=ask.concurrency,
        budget=ask.budget,
        split=ask.split or (conf.split if conf is not None else None),
        min_score=ask.min_score if ask.min_score is not None else (conf.min_score if conf else None),
        judge_model=conf.judge_model if conf is not None else None,
        temperature=ask.temperature,
    )
    return plan, dataset


def _workflow_plan(settings: Settings, ask: EvalAsk) -> tuple[Plan, Dataset]:
    assert ask.target is not None
    if ask.dataset is None:
        raise InvalidInput(f"evaluating {ask.target} needs --dataset")
    if ask.prompt is not None or ask.baseline is not None:
        raise InvalidInput("--prompt and --baseline are for prompt targets; a workflow runs as it is")
    dataset = load_dataset(settings, ask.dataset, strict=ask.strict)
    name = ask.target.removeprefix(WORKFLOW)
    plan = Plan(
        name=name,
        target=ask.target,
        dataset=dataset.name,
        scorers=ask.scorers or ("exact",),
        repeat=ask.repeat,
        concurrency=ask.concurrency,
        budget=ask.budget,
        split=ask.split,
        min_score=ask.min_score,
    )
    return plan, dataset


def _target(db: Database, tools: Tools, plan: Plan) -> Target:
    if plan.target.startswith(WORKFLOW):
        if tools.runs is None:
            raise InvalidInput("a workflow target needs the app that runs it: load it with --app")
        return WorkflowTarget(db, tools.runs, plan.target.removeprefix(WORKFLOW))
    ref = plan.target.removeprefix("prompt:")
    return PromptTarget(db, tools.gateway, ref, plan.model, plan.temperature)


async def evaluate(
    settings: Settings, db: Database, tools: Tools, ask: EvalAsk, note: Callable[[str], None]
) -> EvalRun:
    """Run (or resume) the evaluation ``ask`` describes, with its baseline; ``note`` hears what happens
    beside the results (lines skipped, a baseline evaluated first)."""
    if ask.resume is not None:
        from .results import get_run

        old = get_run(db, ask.resume)
        plan = Plan.from_json(old.plan)
        dataset = load_dataset(settings, old.dataset, strict=ask.strict)
    else:
        plan, dataset = plan_for(settings, db, ask)
    for problem in dataset.problems:
        note(f"skipped {problem}")
    target = _target(db, tools, plan)
    baseline = None
    if ask.baseline is not None:
        baseline = await _baseline(settings, db, tools, plan, dataset, ask.baseline, note)
    return await run_eval(db, dataset, plan, target, tools, resume=ask.resume, baseline=baseline)


async def _baseline(
    settings: Settings,
    db: Database,
    tools: Tools,
    plan: Plan,
    dataset: Dataset,
    label: str,
    note: Callable[[str], None],
) -> Baseline | None:
    name, _, version = plan.target.removeprefix("prompt:").partition("@")
    base = prompts.resolve(db, f"{name}@{label}")
    if base.version == version:
        note(f"the baseline {name}@{label} is this version ({version}): no comparison")
        return None
    target = prompt_target(name, base.version)
    stored = latest_run(db, target, dataset.version, split=plan.split)
    if stored is None:
        note(
            f"no evaluation of {name}@{label} ({base.version}) on {dataset.name}@{dataset.version}: running it"
        )
        base_plan = replace(plan, target=target, min_score=None)
        stored = await run_eval(db, dataset, base_plan, _target(db, tools, base_plan), tools)
    return Baseline(stored.id, target, case_means(case_results(db, stored.id), plan.scorers))
