"""The promotion gate: a prompt version is labelled ``production`` only with a passing evaluation.

For each ``[evals.NAME]`` with ``required = true`` and ``prompt = P``, moving ``production`` of ``P`` to a
version needs a stored evaluation of that exact version, on the dataset's current version (its content
hash: a changed dataset must be evaluated again), that passed and whose every scorer reached the
section's ``min_score``. ``force`` overrides the gate and is recorded in ``eval_overrides`` (who, when,
why) in the transaction that moves the label. This module alone issues SQL on ``eval_overrides``.

:func:`label_gate` is what :func:`crewline.flows.prompts.set_label` calls; :func:`label_prompt` is the
one function the CLI, the API and the console move labels with.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import InvalidInput, PromotionRefused
from ..flows import prompts
from .config import EvalConfig, parse_evals
from .datasets import load_dataset
from .results import latest_run_in
from .targets import prompt_target

if TYPE_CHECKING:
    from ..config import Settings
    from ..store import Conn, Database

__all__ = ["Override", "label_gate", "label_prompt", "overrides"]


@dataclass(frozen=True)
class Override:
    """Who forces a promotion past its gate, and why (both required: the audit is the point)."""

    who: str
    reason: str


def label_gate(settings: Settings, force: Override | None = None) -> prompts.LabelGate:
    guards = [c for c in parse_evals(settings.sections.get("evals")).values() if c.required]
    if force is not None and (not force.reason.strip() or not force.who.strip()):
        raise InvalidInput("--force needs --reason: say why the evaluation is skipped (it is audited)")

    def gate(conn: Conn, prompt: prompts.PromptVersion, label: str) -> None:
        if label != prompts.PRODUCTION:
            return
        missing = [
            why
            for conf in guards
            if conf.prompt == prompt.name and (why := _unmet(settings, conn, conf, prompt))
        ]
        if not missing:
            return
        if force is None:
            raise PromotionRefused(f"{prompt.ref} cannot be labelled production: " + "; ".join(missing))
        conn.execute(
            "INSERT INTO eval_overrides (prompt, label, version, who, reason, at) VALUES (?, ?, ?, ?, ?, ?)",
            (prompt.name, label, prompt.version, force.who, force.reason, time.time()),
        )

    return gate


def _unmet(settings: Settings, conn: Conn, conf: EvalConfig, prompt: prompts.PromptVersion) -> str | None:
    dataset = load_dataset(settings, conf.dataset)
    run = latest_run_in(conn, prompt_target(prompt.name, prompt.version), dataset.version, split=conf.split)
    retry = f"`crewline eval run {conf.name} --prompt {prompt.ref}`"
    where = f"[evals.{conf.name}] requires a passing evaluation on {dataset.name}@{dataset.version}"
    if run is None:
        return f"{where} and there is none; run {retry} (or --force with --reason)"
    low = [
        f"{name} {figures['mean']:.3f}"
        for name, figures in run.summary.get("scorers", {}).items()
        if conf.min_score is not None and figures["mean"] < conf.min_score
    ]
    if not run.passed or low:
        shown = f" ({', '.join(low)} below {conf.min_score})" if low else ""
        return f"{where}; its latest, {run.id}, failed{shown}; improve it and run {retry}"
    return None


def label_prompt(
    db: Database, settings: Settings, name: str, label: str, ref: str, *, force: Override | None = None
) -> prompts.LabelChange:
    """Move ``label`` of prompt ``name`` to ``ref`` through the promotion gate."""
    return prompts.set_label(db, name, label, ref, gate=label_gate(settings, force))


def overrides(db: Database, prompt: str | None = None) -> list[dict[str, Any]]:
    """Forced promotions, newest first."""
    sql = "SELECT prompt, label, version, who, reason, at FROM eval_overrides"
    params: tuple[Any, ...] = ()
    if prompt is not None:
        sql += " WHERE prompt = ?"
        params = (prompt,)
    rows = db.query(lambda conn: conn.all(sql + " ORDER BY at DESC", params))
    keys = ("prompt", "label", "version", "who", "reason", "at")
    return [dict(zip(keys, row, strict=True)) for row in rows]
