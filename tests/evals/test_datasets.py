"""Datasets (versions, bad lines, splits) and every scorer kind on its own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from crewline.config import Settings
from crewline.errors import InvalidInput
from crewline.evals.datasets import Case, held_out, load_dataset, read_dataset
from crewline.evals.scorers import ScoreInput, parse_scorer
from crewline.testing import fake_vector

LINES = [
    '{"input": {"text": "buy now"}, "expected": "spam", "tags": ["ads"]}',
    '{"input": {"text": "hi mom"}, "expected": "ham", "split": "test"}',
    "{not json",
    '{"input": {"txt": "typo"}, "expected": "ham"}',
    '{"expected": "no input"}',
]


class Message(BaseModel):
    text: str


def _write(tmp_path: Path, lines: list[str], name: str = "mail.jsonl") -> Path:
    (tmp_path / "evals").mkdir(exist_ok=True)
    path = tmp_path / "evals" / name
    path.write_text("\n".join(lines) + "\n")
    return path


def test_bad_lines_are_reported_by_number_and_skipped_or_refused(tmp_path: Path) -> None:
    _write(tmp_path, LINES)
    settings = Settings(project_dir=tmp_path)
    ds = load_dataset(settings, "mail", input_model=Message)
    assert [c.input["text"] for c in ds.cases] == ["buy now", "hi mom"]
    assert [p.split(":")[0] for p in ds.problems] == [
        "mail.jsonl line 3 is not valid JSON",
        "mail.jsonl line 4",
        "mail.jsonl line 5",
    ]
    assert "input does not match the target's input: text: Field required" in ds.problems[1]
    with pytest.raises(InvalidInput, match=r"line 3.*line 4.*line 5.*without --strict"):
        load_dataset(settings, "mail", strict=True, input_model=Message)
    with pytest.raises(InvalidInput, match="no dataset 'nope'; datasets in evals/: mail"):
        load_dataset(settings, "nope")


def test_version_is_the_content_hash_and_the_split_is_stable(tmp_path: Path) -> None:
    path = _write(tmp_path, LINES[:2])
    first = read_dataset(path)
    assert read_dataset(path).version == first.version
    _write(tmp_path, [*LINES[:2], '{"input": "more"}'])
    second = read_dataset(path)
    assert second.version != first.version
    # A case keeps its id and split across versions of the file; the named split is kept.
    assert [(c.id, c.split) for c in second.cases[:2]] == [(c.id, c.split) for c in first.cases]
    assert first.cases[1].split == "test"
    assert first.cases[0].split == held_out(first.cases[0].id)
    shares = [held_out(str(i)) for i in range(1000)]
    assert 150 < shares.count("test") < 250


def test_yaml_datasets_number_their_cases_by_line(tmp_path: Path) -> None:
    path = _write(tmp_path, ["- input: {text: a}", "  expected: x", "- input: 3", "  bogus: 1"], "y.yaml")
    ds = read_dataset(path)
    assert [c.input for c in ds.cases] == [{"text": "a"}]
    assert ds.problems == ("y.yaml line 3: unknown key(s) bogus; keys: expected, id, input, split, tags",)


async def _score(spec: str, output: Any, expected: Any, **kw: Any) -> Any:
    return await parse_scorer(spec).score(ScoreInput(Case("c", {"q": 1}, expected), output, **kw))


async def test_each_scorer_kind() -> None:
    assert (await _score("exact", " spam ", "spam")).passed
    assert not (await _score("exact", "ham", "spam")).passed
    fields = await _score("fields", {"a": 1, "b": 2, "c": 3}, {"a": 1, "b": 5})
    assert (fields.value, fields.passed, dict(fields.fields)) == (0.5, False, {"a": True, "b": False})
    assert (await _score("contains", "the spam folder", "spam")).passed
    assert (await _score("contains:folder", "the spam folder", None)).passed
    assert (await _score("regex:^\\d{3}$", "123", None)).passed
    assert not (await _score("regex", "12a", "^\\d+$")).passed
    assert (await _score("numeric:0.01", "about 100.5 dollars", 100)).passed
    assert not (await _score("numeric:0.001", 100.5, 100)).passed
    schema = {"type": "object", "required": ["a"]}
    assert (await _score("json_schema", '{"a": 1}', schema)).passed
    assert "does not match the schema" in (await _score("json_schema", {"b": 1}, schema)).reason
    python = await _score("python:tests.evals.scorer_fns:shorter_than_ten", "short", None)
    assert (python.value, python.reason) == (1.0, "length")


async def test_similarity_and_judge_use_what_they_are_given() -> None:
    async def embed(texts: list[str]) -> Any:
        return [fake_vector(t) for t in texts]

    same = await _score("similarity:0.99", "the same words", "the same words", embed=embed)
    assert same.passed and same.value == pytest.approx(1.0)
    asked: list[tuple[str | None, str]] = []

    async def judge(model: str | None, prompt: str) -> tuple[str, float]:
        asked.append((model, prompt))
        return "SCORE: 8, polite and right", 0.002

    scorer = parse_scorer("judge:Is it polite?", judge_model="smart")
    graded = await scorer.score(ScoreInput(Case("c", "hi", "hello"), "hello there", judge=judge))
    assert (graded.value, graded.passed, graded.cost, graded.reason) == (0.8, True, 0.002, "polite and right")
    assert asked[0][0] == "smart" and "Rubric: Is it polite?" in asked[0][1]


def test_bad_scorer_specs_are_refused_with_the_kinds() -> None:
    with pytest.raises(InvalidInput, match="unknown scorer 'exactly'; scorers: exact, fields"):
        parse_scorer("exactly")
    with pytest.raises(InvalidInput, match="not a number"):
        parse_scorer("numeric:abc")
    with pytest.raises(InvalidInput, match=r"python:package\.module:function"):
        parse_scorer("python:nofunction")
