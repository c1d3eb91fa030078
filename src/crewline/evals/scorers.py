"""Scorers: each turns one case's output into a score between 0 and 1 and a pass or fail.

A scorer is written as a spec, in ``[evals.NAME] scorers`` or ``--scorer``: ``exact``, ``fields`` (per
field of a structured output: the score is the share of expected fields matched, and each field's
accuracy is reported), ``contains[:TEXT]``, ``regex[:PATTERN]``, ``numeric[:TOLERANCE]``,
``json_schema`` (the output validates against the case's ``expected`` schema, or the prompt's output
model), ``similarity[:THRESHOLD]`` (cosine of the memory embedder's vectors), ``judge[:RUBRIC]`` (an LLM
grades the output 0-10 against the rubric through the gateway; its model is ``[evals] judge_model`` and its
cost is counted in the evaluation's) and ``python:module:function`` (called with ``(output, expected,
input)``, returning a bool, a number or ``(number, reason)``). A scorer that raises marks the case errored
with the reason; the run goes on.
"""

from __future__ import annotations

import importlib
import inspect
import json
import math
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import jsonschema
import numpy as np

from ..errors import InvalidInput
from .datasets import Case

__all__ = ["KINDS", "Embed", "Judge", "Score", "ScoreInput", "Scorer", "parse_scorer"]


@dataclass(frozen=True)
class Score:
    value: float
    passed: bool
    reason: str = ""
    fields: Mapping[str, bool] = field(default_factory=dict)  # per-field correctness (``fields``)
    cost: float = 0.0  # what grading cost (a judge's model calls)


class Judge(Protocol):
    """How a judge scorer asks a model: the gateway's ``complete`` reduced to what it needs."""

    async def __call__(self, model: str | None, prompt: str) -> tuple[str, float]: ...


class Embed(Protocol):
    async def __call__(self, texts: list[str]) -> Any: ...


@dataclass(frozen=True)
class ScoreInput:
    case: Case
    output: Any  # the parsed output (a dict for structured outputs) or the reply's text
    judge: Judge | None = None
    embed: Embed | None = None
    schema: Mapping[str, Any] | None = None  # the target's output schema, if it has one


ScoreFn = Callable[["Scorer", ScoreInput], Awaitable[Score]]


@dataclass(frozen=True)
class Scorer:
    """A parsed spec: ``kind`` and its one argument (``arg``)."""

    kind: str
    arg: str | None = None
    judge_model: str | None = None

    @property
    def name(self) -> str:
        return self.kind if self.arg is None or self.kind == "judge" else f"{self.kind}:{self.arg}"

    async def score(self, given: ScoreInput) -> Score:
        return await _KINDS[self.kind](self, given)


def parse_scorer(spec: str, *, judge_model: str | None = None) -> Scorer:
    """``kind`` or ``kind:arg``; a bad spec names the kinds there are."""
    kind, sep, arg = spec.strip().partition(":")
    if kind not in _KINDS:
        raise InvalidInput(f"unknown scorer {kind!r}; scorers: {', '.join(KINDS)}")
    if kind in ("numeric", "similarity") and sep:
        try:
            number = float(arg)
        except ValueError:
            raise InvalidInput(f"scorer {spec!r}: {arg!r} is not a number") from None
        if not math.isfinite(number) or number < 0:
            raise InvalidInput(f"scorer {spec!r}: {arg!r} must be a number of at least 0")
    if kind == "regex" and sep:
        try:
            re.compile(arg)
        except re.error as e:
            raise InvalidInput(f"scorer {spec!r}: not a regular expression: {e}") from None
    if kind == "python" and not re.fullmatch(r"[\w.]+:\w+", arg):
        raise InvalidInput(f"scorer {spec!r}: write python:package.module:function")
    return Scorer(kind, arg if sep else None, judge_model)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, str) and isinstance(b, str):
        return a.strip() == b.strip()
    return bool(a == b)


async def _exact(s: Scorer, g: ScoreInput) -> Score:
    ok = _same(g.output, g.case.expected)
    return Score(float(ok), ok, "" if ok else f"expected {_text(g.case.expected)[:80]}")


async def _fields(s: Scorer, g: ScoreInput) -> Score:
    expected, output = g.case.expected, g.output
    if not isinstance(expected, Mapping):
        raise InvalidInput("the fields scorer needs an object as 'expected'")
    if not isinstance(output, Mapping):
        return Score(0.0, False, "the output is not an object", dict.fromkeys(expected, False))
    per = {str(k): _same(output.get(k), v) for k, v in expected.items()}
    value = sum(per.values()) / len(per) if per else 1.0
    wrong = [k for k, ok in per.items() if not ok]
    return Score(value, not wrong, f"wrong: {', '.join(wrong)}" if wrong else "", per)


async def _contains(s: Scorer, g: ScoreInput) -> Score:
    needles = [s.arg] if s.arg is not None else g.case.expected
    needles = needles if isinstance(needles, list) else [needles]
    text = _text(g.output)
    missing = [str(n) for n in needles if str(n) not in text]
    return Score(float(not missing), not missing, f"missing {missing[0]!r}" if missing else "")


async def _regex(s: Scorer, g: ScoreInput) -> Score:
    pattern = s.arg if s.arg is not None else str(g.case.expected)
    ok = re.search(pattern, _text(g.output)) is not None
    return Score(float(ok), ok, "" if ok else f"no match for {pattern!r}")


async def _numeric(s: Scorer, g: ScoreInput) -> Score:
    tolerance = float(s.arg) if s.arg is not None else 1e-9
    got = _number(g.output)
    if got is None:
        return Score(0.0, False, "the output is not a number")
    want = float(g.case.expected)
    ok = abs(got - want) <= tolerance * max(1.0, abs(want)) if tolerance < 1 else abs(got - want) <= tolerance
    return Score(float(ok), ok, "" if ok else f"{got} is not within {tolerance} of {want}")


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    found = re.search(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?", str(value))
    return float(found.group()) if found else None


async def _json_schema(s: Scorer, g: ScoreInput) -> Score:
    schema = g.schema if g.schema is not None else g.case.expected
    if not isinstance(schema, Mapping):
        raise InvalidInput("json_schema needs a target with an output model or a schema as 'expected'")
    value = g.output
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as e:
            return Score(0.0, False, f"not JSON: {e}")
    try:
        jsonschema.validate(value, dict(schema))
    except jsonschema.ValidationError as e:
        return Score(0.0, False, f"does not match the schema: {e.message}"[:200])
    return Score(1.0, True)


async def _similarity(s: Scorer, g: ScoreInput) -> Score:
    if g.embed is None:
        raise InvalidInput("similarity needs an embedder: configure [memory] embedder")
    threshold = float(s.arg) if s.arg is not None else 0.8
    vectors = np.asarray(await g.embed([_text(g.output), _text(g.case.expected)]), dtype=np.float64)
    a, b = vectors[0], vectors[1]
    norm = float(np.linalg.norm(a) * np.linalg.norm(b))
    value = max(0.0, float(a @ b) / norm) if norm else 0.0
    return Score(min(1.0, value), value >= threshold, f"similarity {value:.2f}")


_JUDGE = """You grade an AI system's output. Rubric: {rubric}

Input: {input}
Expected (may be empty): {expected}
Output: {output}

Answer with one line: SCORE: <0-10>, then one sentence of reason."""


async def _judge(s: Scorer, g: ScoreInput) -> Score:
    if g.judge is None:
        raise InvalidInput("the judge scorer needs the model gateway")
    rubric = s.arg or "Is the output correct and complete for the input, as the expected answer is?"
    prompt = _JUDGE.format(
        rubric=rubric, input=_text(g.case.input), expected=_text(g.case.expected), output=_text(g.output)
    )
    reply, cost = await g.judge(s.judge_model, prompt)
    found = re.search(r"SCORE:\s*(\d+(?:\.\d+)?)", reply, re.IGNORECASE)
    if found is None:
        raise InvalidInput(f"the judge's reply gave no 'SCORE: n': {reply[:80]!r}")
    value = min(10.0, float(found.group(1))) / 10
    return Score(value, value >= 0.7, reply[found.end() :].strip(" ,.\n")[:200], cost=cost)


async def _python(s: Scorer, g: ScoreInput) -> Score:
    assert s.arg is not None
    module, _, name = s.arg.rpartition(":")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise InvalidInput(f"scorer python:{s.arg}: cannot load it: {e}") from e
    result = fn(g.output, g.case.expected, g.case.input)
    if inspect.isawaitable(result):
        result = await result
    reason = ""
    if isinstance(result, tuple):
        result, reason = result[0], str(result[1])
    if isinstance(result, bool):
        return Score(float(result), result, reason)
    if isinstance(result, int | float) and math.isfinite(result) and 0 <= result <= 1:
        return Score(float(result), result >= 0.5, reason)
    raise InvalidInput(f"scorer python:{s.arg} returned {result!r}: return a bool or a number in [0, 1]")


_KINDS: dict[str, ScoreFn] = {
    "exact": _exact,
    "fields": _fields,
    "contains": _contains,
    "regex": _regex,
    "numeric": _numeric,
    "json_schema": _json_schema,
    "similarity": _similarity,
    "judge": _judge,
    "python": _python,
}
KINDS = tuple(_KINDS)
