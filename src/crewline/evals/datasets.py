"""Evaluation datasets: ``evals/NAME.jsonl`` or ``evals/NAME.yaml`` in the project, versioned by content.

Each case is an object with ``input`` (required), ``expected``, ``tags`` and ``split`` (``train`` or
``test``; when absent a held-out split is assigned from a hash of the input, so the same case always lands
on the same side and what is tuned on stays apart from what is measured). A dataset's version is the first
12 hex digits of the sha256 of its file, as for prompts: a stored result names the exact data it was
measured on. A line that does not parse, or whose input does not match the target's input model, is
reported with its line number and skipped, or the whole file is refused with ``strict``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pydantic
import yaml

from ..errors import InvalidInput
from ..store.payloads import check_depth, parse_json

if TYPE_CHECKING:
    from ..config import Settings

__all__ = [
    "SPLITS",
    "Case",
    "Dataset",
    "case_id",
    "datasets_dir",
    "held_out",
    "load_dataset",
    "read_dataset",
]

Split = Literal["train", "test"]
SPLITS: tuple[Split, ...] = ("train", "test")
_KEYS = frozenset({"id", "input", "expected", "tags", "split"})
_TEST_SHARE = 20  # percent of cases held out when a case names no split


@dataclass(frozen=True)
class Case:
    """One case: ``id`` is stable across versions of the file (a hash of the input unless given)."""

    id: str
    input: Any
    expected: Any = None
    tags: tuple[str, ...] = ()
    split: Split = "train"
    line: int = 0


@dataclass(frozen=True)
class Dataset:
    name: str
    version: str
    cases: tuple[Case, ...]
    problems: tuple[str, ...] = field(default=())  # lines skipped, each naming its line number

    def only(self, split: str | None) -> Dataset:
        """The cases of one split (all of them for None)."""
        if split is None:
            return self
        if split not in SPLITS:
            raise InvalidInput(f"split {split!r} is not one of {', '.join(SPLITS)}")
        return Dataset(
            self.name, self.version, tuple(c for c in self.cases if c.split == split), self.problems
        )


def case_id(input: Any) -> str:
    """A case's identity from its input: the same input is the same case in every version of a file."""
    text = json.dumps(input, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def held_out(key: str) -> Split:
    """``test`` for about one case in five, decided by a hash of ``key`` so it never moves."""
    return "test" if int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % 100 < _TEST_SHARE else "train"


def datasets_dir(settings: Settings) -> Path:
    """Where datasets live: ``<project>/evals``."""
    return settings.project_dir / "evals"


def load_dataset(
    settings: Settings, name: str, *, strict: bool = False, input_model: type[Any] | None = None
) -> Dataset:
    """The dataset ``name`` (a file in ``evals/`` with or without its suffix, or a path)."""
    return read_dataset(_find(settings, name), strict=strict, input_model=input_model)


def _find(settings: Settings, name: str) -> Path:
    given = Path(name)
    candidates = [given] if given.suffix else []
    base = datasets_dir(settings)
    candidates += [settings.project_dir / given, base / given]
    candidates += [base / f"{name}{suffix}" for suffix in (".jsonl", ".yaml", ".yml")]
    for path in candidates:
        if path.is_file():
            return path
    known = sorted(p.stem for p in base.glob("*")) if base.is_dir() else []
    hint = f"; datasets in evals/: {', '.join(known)}" if known else "; create evals/NAME.jsonl"
    raise InvalidInput(f"no dataset {name!r}{hint}")


def read_dataset(path: Path, *, strict: bool = False, input_model: type[Any] | None = None) -> Dataset:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise InvalidInput(f"cannot read dataset {path.name}: {e.strerror}") from e
    version = hashlib.sha256(raw).hexdigest()[:12]
    rows = _yaml_rows(raw, path.name) if path.suffix in (".yaml", ".yml") else _jsonl_rows(raw, path.name)
    cases: list[Case] = []
    problems: list[str] = []
    adapter = None if input_model is None else pydantic.TypeAdapter(input_model)
    seen: set[str] = set()
    for line, row in rows:
        try:
            case = _case(row, line, path.name, adapter)
            if case.id in seen:
                raise InvalidInput(f"{path.name} line {line}: case {case.id} appears twice")
            seen.add(case.id)
            cases.append(case)
        except InvalidInput as e:
            problems.append(str(e))
    if strict and problems:
        raise InvalidInput("; ".join(problems) + " (without --strict these lines are skipped)")
    if not cases:
        raise InvalidInput(
            f"dataset {path.name} has no usable case" + (f": {problems[0]}" if problems else "")
        )
    return Dataset(path.stem, version, tuple(cases), tuple(problems))


def _jsonl_rows(raw: bytes, where: str) -> list[tuple[int, Any]]:
    rows: list[tuple[int, Any]] = []
    for number, text in enumerate(raw.split(b"\n"), start=1):
        if not text.strip() or text.lstrip().startswith(b"#"):
            continue
        try:
            rows.append((number, parse_json(text, f"{where} line {number}")))
        except InvalidInput as e:
            rows.append((number, e))
    return rows


def _yaml_rows(raw: bytes, where: str) -> list[tuple[int, Any]]:
    try:
        nodes = yaml.compose(raw.decode("utf-8"), Loader=yaml.SafeLoader)
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise InvalidInput(f"{where} is not valid YAML: {e}") from e
    if nodes is None or not isinstance(nodes, yaml.SequenceNode):
        raise InvalidInput(f"{where} must be a YAML list of cases (- input: ...)")
    loader = yaml.SafeLoader("")
    rows: list[tuple[int, Any]] = []
    for node in nodes.value:
        rows.append(
            (
                node.start_mark.line + 1,
                json.loads(json.dumps(loader.construct_object(node, deep=True), default=str)),
            )
        )
    return rows


def _case(row: Any, line: int, where: str, adapter: pydantic.TypeAdapter[Any] | None) -> Case:
    if isinstance(row, InvalidInput):
        raise row
    at = f"{where} line {line}"
    if not isinstance(row, Mapping) or "input" not in row:
        raise InvalidInput(f"{at}: a case is an object with 'input' (and 'expected', 'tags', 'split')")
    unknown = sorted(set(row) - _KEYS)
    if unknown:
        raise InvalidInput(f"{at}: unknown key(s) {', '.join(unknown)}; keys: {', '.join(sorted(_KEYS))}")
    check_depth(row, at)
    if adapter is not None:
        try:
            adapter.validate_python(row["input"])
        except pydantic.ValidationError as e:
            first = e.errors()[0]
            loc = ".".join(str(p) for p in first["loc"]) or "input"
            raise InvalidInput(
                f"{at}: input does not match the target's input: {loc}: {first['msg']}"
            ) from None
    tags = row.get("tags") or []
    if not isinstance(tags, Sequence) or isinstance(tags, str) or not all(isinstance(t, str) for t in tags):
        raise InvalidInput(f"{at}: 'tags' must be a list of strings")
    ident = row.get("id")
    if ident is not None and not isinstance(ident, str | int):
        raise InvalidInput(f"{at}: 'id' must be a string")
    cid = str(ident) if ident is not None else case_id(row["input"])
    split = row.get("split") or held_out(cid)
    if split not in SPLITS:
        raise InvalidInput(f"{at}: split {split!r} is not one of {', '.join(SPLITS)}")
    return Case(cid, row["input"], row.get("expected"), tuple(tags), split, line)
