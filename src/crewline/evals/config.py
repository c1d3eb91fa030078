"""``[evals.NAME]`` sections of crewline.toml: what ``crewline eval run NAME`` evaluates and whether a
prompt's ``production`` label waits for it to pass.

    [evals.triage]
    prompt = "triage"            # the prompt evaluated (its versions are what get labelled)
    dataset = "triage"           # evals/triage.jsonl
    scorers = ["fields", "judge:Is the reply polite?"]
    min_score = 0.9              # every scorer's mean must reach it
    required = true              # `production` only for a version with a passing evaluation
    split = "test"               # the held-out cases (default: all)
    model = "cheap"              # default: the prompt's own
    judge_model = "smart"
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError, InvalidInput
from .datasets import SPLITS
from .scorers import parse_scorer

__all__ = ["EvalConfig", "evals_problems", "parse_evals"]

_KEYS = frozenset({"prompt", "dataset", "scorers", "min_score", "required", "split", "model", "judge_model"})


@dataclass(frozen=True)
class EvalConfig:
    name: str
    dataset: str
    prompt: str | None = None
    scorers: tuple[str, ...] = ("exact",)
    min_score: float | None = None
    required: bool = False
    split: str | None = None
    model: str | None = None
    judge_model: str | None = None


def parse_evals(section: Any) -> dict[str, EvalConfig]:
    """Every ``[evals.NAME]``; a bad value raises :class:`ConfigError` naming the section and key."""
    if section is None:
        return {}
    if not isinstance(section, Mapping):
        raise ConfigError("[evals] in crewline.toml must hold tables: [evals.NAME] dataset = ...")
    return {str(name): _one(str(name), table) for name, table in section.items()}


def evals_problems(section: Any) -> list[str]:
    """Every section's problem, one each (for ``crewline config check``)."""
    tables = section.items() if isinstance(section, Mapping) else [(None, section)]
    problems = []
    for name, table in tables:
        try:
            parse_evals(table if name is None else {name: table})
        except ConfigError as e:
            problems.append(str(e))
    return problems


def _one(name: str, table: Any) -> EvalConfig:
    where = f"[evals.{name}]"
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where} must be a table with dataset = ... (and prompt, scorers, min_score)")
    unknown = sorted(set(table) - _KEYS)
    if unknown:
        raise ConfigError(f"{where} {unknown[0]}: unknown key; keys: {', '.join(sorted(_KEYS))}")
    strings = {k: table.get(k) for k in ("prompt", "dataset", "split", "model", "judge_model")}
    for key, value in strings.items():
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise ConfigError(f"{where} {key} must be a non-empty string, not {value!r}")
    if strings["dataset"] is None:
        raise ConfigError(f"{where} dataset is missing: name a file in evals/, e.g. dataset = {name!r}")
    if strings["split"] is not None and strings["split"] not in SPLITS:
        raise ConfigError(f"{where} split must be one of {', '.join(SPLITS)}, not {strings['split']!r}")
    scorers = table.get("scorers", ["exact"])
    if not isinstance(scorers, list) or not scorers or not all(isinstance(s, str) for s in scorers):
        raise ConfigError(f"{where} scorers must be a list of scorer specs, e.g. ['exact']")
    for spec in scorers:
        try:
            parse_scorer(spec)
        except InvalidInput as e:
            raise ConfigError(f"{where} scorers: {e}") from None
    min_score = table.get("min_score")
    if min_score is not None and (
        isinstance(min_score, bool) or not isinstance(min_score, int | float) or not 0 <= min_score <= 1
    ):
        raise ConfigError(f"{where} min_score must be a number between 0 and 1, not {min_score!r}")
    required = table.get("required", False)
    if not isinstance(required, bool):
        raise ConfigError(f"{where} required must be true or false, not {required!r}")
    if required and strings["prompt"] is None:
        raise ConfigError(f"{where} required = true needs prompt = the prompt it guards")
    return EvalConfig(
        name,
        str(strings["dataset"]),
        strings["prompt"],
        tuple(scorers),
        None if min_score is None else float(min_score),
        required,
        strings["split"],
        strings["model"],
        strings["judge_model"],
    )
