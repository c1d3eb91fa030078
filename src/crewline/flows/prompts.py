"""Prompt templates: files in the operator's project, versioned by content hash, labelled in the store.

A prompt is ``<prompts dir>/<name>.md`` (``support/reply.md`` is ``support/reply``): optional YAML front
matter (``model``, ``output``, ``params``, ``description``; other keys are kept as metadata) over a Jinja2
body, rendered in a sandbox where an undefined variable is an error. :func:`sync_prompts` stores each file
under its version, the first 12 hex digits of the sha256 of the file, in ``prompt_versions``;
``prompt_labels`` points names such as ``production``, ``candidate`` and ``latest`` at versions. Sync moves
``latest`` to what the file holds now and gives a prompt's first version ``production``; after that only an
operator moves ``production``. Stored versions are never deleted, so a recorded ``name@version`` always
leads back to the exact text that was sent. This module alone issues
SQL on ``prompt_versions`` and ``prompt_labels``.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import hashlib
import json
import re
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import BaseModel

from ..errors import ConfigError, InvalidInput

if TYPE_CHECKING:
    from jinja2 import Template
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    from ..config import Settings
    from ..store import Conn, Database

__all__ = [
    "LATEST",
    "PRODUCTION",
    "LabelChange",
    "LabelGate",
    "PromptChange",
    "PromptSummary",
    "PromptVersion",
    "aresolve",
    "diff",
    "list_prompts",
    "lookup",
    "move_label",
    "prompt_versions",
    "prompts_dir",
    "remove_label",
    "render",
    "resolve",
    "set_label",
    "split_ref",
    "summaries",
    "sync_prompts",
]

LATEST = "latest"
PRODUCTION = "production"

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*(/[A-Za-z0-9_][A-Za-z0-9_.\-]*)*\Z")
_LABEL = re.compile(r"[a-z][a-z0-9_\-]{0,39}\Z")
_HEX = re.compile(r"[0-9a-f]{4,12}\Z")
_STRING_KEYS = ("model", "output", "description")


@dataclass(frozen=True)
class PromptVersion:
    """One stored version of a prompt; ``label`` is the label it was resolved through, if any."""

    name: str
    version: str
    body: str
    meta: Mapping[str, Any]
    label: str | None = None
    labels: tuple[str, ...] = ()  # every label pointing at this version
    source: str = ""  # the whole file, front matter included
    created_at: float = 0.0

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def model(self) -> str | None:
        return self.meta.get("model")

    @property
    def output(self) -> str | None:
        return self.meta.get("output")

    @property
    def params(self) -> tuple[str, ...]:
        return tuple(self.meta.get("params") or ())

    @property
    def description(self) -> str | None:
        return self.meta.get("description")

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class PromptChange:
    """What a sync did to one prompt: ``added`` it, stored an ``updated`` version, or ``restored`` an old one."""

    name: str
    version: str
    kind: Literal["added", "updated", "restored"]
    previous: str | None  # the version ``latest`` pointed at before
    production: str | None  # the version ``production`` points at after the sync


@dataclass(frozen=True)
class LabelChange:
    name: str
    label: str
    version: str | None  # None when the label was removed
    previous: str | None


@dataclass(frozen=True)
class PromptSummary:
    """A prompt as listed: how many versions, its labels, the front matter of its latest version."""

    name: str
    versions: int
    labels: Mapping[str, str]
    meta: Mapping[str, Any]
    updated_at: float  # when the latest version was first stored

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# -- files ---------------------------------------------------------------------------------------------


def prompts_dir(settings: Settings) -> Path:
    """``[prompts] dir`` from crewline.toml (relative to the project), else ``<project>/prompts``."""
    section = settings.sections.get("prompts", {})
    if not isinstance(section, Mapping):
        raise ConfigError("[prompts] in crewline.toml must be a table, e.g. [prompts] dir = 'prompts'")
    configured = section.get("dir")
    if configured is None:
        return settings.project_dir / "prompts"
    if not isinstance(configured, str) or not configured.strip():
        raise ConfigError(f"[prompts] dir in crewline.toml must be a path, not {configured!r}")
    return settings.project_dir / Path(configured).expanduser()


def _read_dir(directory: Path) -> list[PromptVersion]:
    if not directory.is_dir():
        raise InvalidInput(
            f"no prompts directory at {directory}; create it or set [prompts] dir in crewline.toml"
        )
    files: list[PromptVersion] = []
    problems: list[str] = []
    for path in sorted(directory.rglob("*.md")):
        if any(part.startswith(".") for part in path.relative_to(directory).parts):
            continue
        try:
            files.append(_parse(path, directory))
        except InvalidInput as e:
            problems.append(str(e))
    if problems:
        raise InvalidInput("; ".join(problems))
    return files


def _parse(path: Path, root: Path) -> PromptVersion:
    rel = path.relative_to(root)
    where = (Path(root.name) / rel).as_posix()
    name = rel.with_suffix("").as_posix()
    if not _NAME.match(name):
        raise InvalidInput(f"{where}: prompt names may only use letters, digits, '_', '-', '.' and '/'")
    if not path.resolve().is_relative_to(root.resolve()):  # a symlink must not publish another file
        raise InvalidInput(f"{where} links to a file outside the prompts directory; copy the file in instead")
    try:
        raw = path.read_bytes()
        source = raw.decode("utf-8")
    except OSError as e:
        raise InvalidInput(f"cannot read {where}: {e.strerror}") from e
    except UnicodeDecodeError as e:
        raise InvalidInput(f"{where} is not UTF-8 text") from e
    meta, body, body_line = _split_front_matter(source, where)
    from jinja2 import TemplateSyntaxError  # jinja2 and yaml load with the first prompt, not with crewline

    try:
        _template(body)
    except TemplateSyntaxError as e:
        line = body_line + (e.lineno or 1) - 1
        raise InvalidInput(f"{where} line {line}: template syntax error: {e.message}") from e
    return PromptVersion(name, hashlib.sha256(raw).hexdigest()[:12], body, meta, source=source)


def _split_front_matter(source: str, where: str) -> tuple[dict[str, Any], str, int]:
    """(metadata, body, file line the body starts on)."""
    lines = source.splitlines(keepends=True)
    if not lines or lines[0].rstrip() != "---":
        return {}, source, 1
    end = next((i for i, line in enumerate(lines) if i > 0 and line.rstrip() == "---"), None)
    if end is None:
        raise InvalidInput(f"{where}: the front matter opened on line 1 is never closed; end it with '---'")
    meta = _check_meta(_load_yaml("".join(lines[1:end]), where), where)
    return meta, "".join(lines[end + 1 :]), end + 2


def _load_yaml(text: str, where: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        line = e.problem_mark.line + 2 if e.problem_mark is not None else 2
        raise InvalidInput(f"{where} line {line}: front matter is not valid YAML: {e.problem}") from e
    except yaml.YAMLError as e:
        raise InvalidInput(f"{where}: front matter is not valid YAML: {e}") from e


def _check_meta(data: Any, where: str) -> dict[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise InvalidInput(f"{where}: front matter must be a YAML mapping of names to values")
    for key in _STRING_KEYS:
        if key in data and not isinstance(data[key], str):
            raise InvalidInput(f"{where}: front matter {key!r} must be a string, not {data[key]!r}")
    params = data.get("params", [])
    if not isinstance(params, list) or not all(isinstance(p, str) and p.isidentifier() for p in params):
        raise InvalidInput(f"{where}: front matter 'params' must be a list of parameter names")
    normal: dict[str, Any] = json.loads(json.dumps(data, default=str))  # YAML dates and such as text
    return normal


@functools.cache
def _environment() -> ImmutableSandboxedEnvironment:
    from jinja2 import StrictUndefined
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    # Immutable: a template must not be able to change the workflow input it is given (replays see the same).
    return ImmutableSandboxedEnvironment(
        undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True
    )


@functools.lru_cache(maxsize=256)
def _template(body: str) -> Template:
    return _environment().from_string(body)


# -- rendering -----------------------------------------------------------------------------------------


def render(prompt: PromptVersion, params: object = None) -> str:
    """The prompt's body rendered with ``params``: a dict, a Pydantic model or a dataclass instance.

    A model's or dataclass's fields become the template's variables; values keep their type, so nested
    models are read with attribute access (``{{ email.subject }}``) just as nested dicts are.
    """
    values = _variables(prompt, params)
    missing = [p for p in prompt.params if p not in values]
    if missing:
        given = ", ".join(sorted(values)) or "none"
        raise InvalidInput(f"prompt {prompt.ref} needs parameter(s) {', '.join(missing)}; given: {given}")
    from jinja2 import TemplateError, TemplateSyntaxError, UndefinedError
    from jinja2.exceptions import SecurityError

    try:
        return _template(prompt.body).render(values)
    except TemplateSyntaxError as e:
        raise InvalidInput(
            f"prompt {prompt.ref}{_line(prompt, e)}: template syntax error: {e.message}"
        ) from e
    except SecurityError as e:
        raise InvalidInput(f"prompt {prompt.ref}{_line(prompt, e)}: refused by the sandbox: {e}") from e
    except UndefinedError as e:
        raise InvalidInput(f"prompt {prompt.ref}{_line(prompt, e)}: missing variable: {e}") from e
    except (TemplateError, ArithmeticError, LookupError, TypeError, ValueError) as e:
        why = f"{type(e).__name__}: {e}"
        raise InvalidInput(f"prompt {prompt.ref}{_line(prompt, e)}: cannot render: {why}") from e


def _variables(prompt: PromptVersion, params: object) -> dict[str, Any]:
    if params is None:
        return {}
    if isinstance(params, BaseModel):
        fields = {name: getattr(params, name) for name in type(params).model_fields}
        return {**(params.model_extra or {}), **fields}
    if dataclasses.is_dataclass(params) and not isinstance(params, type):
        return {f.name: getattr(params, f.name) for f in dataclasses.fields(params)}
    if isinstance(params, Mapping):
        return {str(k): v for k, v in params.items()}
    raise InvalidInput(
        f"parameters for prompt {prompt.ref} must be a dict or a Pydantic model, not {type(params).__name__}"
    )


def _line(prompt: PromptVersion, e: BaseException) -> str:
    """' line N' of the prompt's file where rendering failed (jinja maps tracebacks to template lines)."""
    from jinja2 import TemplateSyntaxError

    if isinstance(e, TemplateSyntaxError):
        line = e.lineno
    else:
        frames = [f for f in traceback.extract_tb(e.__traceback__) if f.filename == "<template>"]
        if not frames or frames[-1].lineno is None:
            return ""
        line = frames[-1].lineno
    front = len(prompt.source) - len(prompt.body)  # the front matter, when the source is known
    offset = prompt.source[:front].count("\n") if front > 0 and prompt.source.endswith(prompt.body) else 0
    return f" line {line + offset}"


# -- the store -----------------------------------------------------------------------------------------


def sync_prompts(db: Database, directory: Path) -> list[PromptChange]:
    """Store every prompt file under ``directory``; all or nothing, and a no-op when nothing changed."""
    files = _read_dir(directory)  # every file is checked before anything is stored
    now = time.time()
    return db.run(lambda conn: [c for f in files if (c := _sync_one(conn, f, now)) is not None])


def _sync_one(conn: Conn, f: PromptVersion, now: float) -> PromptChange | None:
    labels = _labels(conn, f.name)
    if labels.get(LATEST) == f.version:
        return None
    stored = conn.one("SELECT 1 FROM prompt_versions WHERE name = ? AND version = ?", (f.name, f.version))
    if stored is None:
        conn.execute(
            "INSERT INTO prompt_versions (name, version, body, metadata, source, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (name, version) DO NOTHING",
            (f.name, f.version, f.body, json.dumps(f.meta), f.source, now),
        )
    _put_label(conn, f.name, LATEST, f.version, now)
    if not labels:
        _put_label(conn, f.name, PRODUCTION, f.version, now)
    kind: Literal["added", "updated", "restored"] = (
        "added" if not labels else "updated" if stored is None else "restored"
    )
    production = labels.get(PRODUCTION) if labels else f.version
    return PromptChange(f.name, f.version, kind, labels.get(LATEST), production)


def _put_label(conn: Conn, name: str, label: str, version: str, now: float) -> None:
    conn.execute(
        "INSERT INTO prompt_labels (name, label, version, updated_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (name, label) DO UPDATE SET version = excluded.version, updated_at = excluded.updated_at",
        (name, label, version, now),
    )


def _labels(conn: Conn, name: str) -> dict[str, str]:
    rows = conn.all("SELECT label, version FROM prompt_labels WHERE name = ?", (name,))
    return {label: version for label, version in rows}


def _ordered(labels: Mapping[str, str]) -> dict[str, str]:
    """Labels with ``production`` first, then ``latest``, then the rest by name."""
    rank = {PRODUCTION: 0, LATEST: 1}
    return {lb: labels[lb] for lb in sorted(labels, key=lambda lb: (rank.get(lb, 2), lb))}


def split_ref(ref: str) -> tuple[str, str | None]:
    """``"triage@candidate"`` -> ``("triage", "candidate")``; ``"triage"`` -> ``("triage", None)``."""
    name, sep, selector = ref.strip().partition("@")
    if not name or (sep and not selector) or "@" in selector:
        raise InvalidInput(f"prompt reference {ref!r} is not NAME, NAME@label or NAME@version")
    return name, selector or None


def resolve(db: Database, ref: str) -> PromptVersion:
    """``name`` (its ``production`` version, else ``latest``), ``name@label`` or ``name@version``."""
    return db.query(lambda conn: lookup(conn, ref))


async def aresolve(db: Database, ref: str) -> PromptVersion:
    """:func:`resolve` for the event loop."""
    split_ref(ref)  # a malformed reference fails before any read
    return await db.read(lambda conn: lookup(conn, ref))


def lookup(conn: Conn, ref: str) -> PromptVersion:
    """:func:`resolve` on an open connection."""
    name, selector = split_ref(ref)
    return _resolve(conn, name, selector)


def _resolve(conn: Conn, name: str, selector: str | None) -> PromptVersion:
    labels = _labels(conn, name)
    if not labels:
        raise _unknown_prompt(conn, name)
    if selector is None:
        selector = PRODUCTION if PRODUCTION in labels else LATEST
    if selector in labels:
        return _load(conn, name, labels[selector], selector, labels)
    return _load(conn, name, _match_version(conn, name, selector, labels), None, labels)


def _match_version(conn: Conn, name: str, selector: str, labels: Mapping[str, str]) -> str:
    known = f"labels: {', '.join(_ordered(labels))}"
    if not _HEX.match(selector):
        raise InvalidInput(f"prompt {name} has no label {selector!r}; {known}")
    rows = conn.all(
        "SELECT version FROM prompt_versions WHERE name = ? ORDER BY created_at DESC, version", (name,)
    )
    versions: list[str] = [v for (v,) in rows]
    found = [v for v in versions if v.startswith(selector)]
    if len(found) > 1:
        raise InvalidInput(f"version {selector!r} of prompt {name} is ambiguous: {', '.join(found)}")
    if not found:
        shown = ", ".join(versions[:10]) + (f" and {len(versions) - 10} more" if len(versions) > 10 else "")
        raise InvalidInput(f"prompt {name} has no version {selector!r}; versions: {shown}; {known}")
    return found[0]


def _unknown_prompt(conn: Conn, name: str) -> InvalidInput:
    names = [n for (n,) in conn.all("SELECT DISTINCT name FROM prompt_labels ORDER BY name")]
    if not names:
        return InvalidInput(f"no prompt {name!r}; no prompts are stored yet: run `crewline prompts sync`")
    close = difflib.get_close_matches(name, names, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    shown = ", ".join(names[:30]) + (f" and {len(names) - 30} more" if len(names) > 30 else "")
    return InvalidInput(f"no prompt {name!r}{hint}; known: {shown}")


def _load(conn: Conn, name: str, version: str, label: str | None, labels: Mapping[str, str]) -> PromptVersion:
    row = conn.one(
        "SELECT body, metadata, source, created_at FROM prompt_versions WHERE name = ? AND version = ?",
        (name, version),
    )
    if row is None:  # a label can only be set to a stored version, and versions are never deleted
        raise InvalidInput(f"prompt {name} label {label!r} points at version {version}, which is not stored")
    body, meta, source, created_at = row
    at = tuple(lb for lb, v in _ordered(labels).items() if v == version)
    return PromptVersion(name, version, body, json.loads(meta), label, at, source, float(created_at))


def _check_label(label: str) -> None:
    if label == LATEST:
        raise InvalidInput("label 'latest' is moved by `crewline prompts sync`, not by hand")
    if not _LABEL.match(label):
        raise InvalidInput(
            f"label {label!r} is not a valid label: use lowercase letters, digits, '-' and '_', "
            "starting with a letter (at most 40)"
        )
    if _HEX.match(label):
        raise InvalidInput(f"label {label!r} looks like a version hash; pick another name")


class LabelGate(Protocol):
    """What may refuse moving a label (the evaluations' promotion gate): called in the transaction that
    moves it, so a refusal moves nothing and whatever it records commits with the move."""

    def __call__(self, conn: Conn, prompt: PromptVersion, label: str) -> None: ...


def set_label(db: Database, name: str, label: str, ref: str, *, gate: LabelGate | None = None) -> LabelChange:
    """Point ``label`` of prompt ``name`` at ``ref`` (a version, a unique version prefix or another label).

    Every front that moves labels for an operator (CLI, API, console) passes the promotion gate of
    :func:`crewline.evals.gate.label_gate` (or calls :func:`crewline.evals.gate.label_prompt`)."""
    _check_label(label)
    return db.run(lambda conn: move_label(conn, name, label, ref, gate=gate))


def move_label(conn: Conn, name: str, label: str, ref: str, *, gate: LabelGate | None = None) -> LabelChange:
    """:func:`set_label` inside the caller's write transaction."""
    _check_label(label)
    target = _resolve(conn, name, ref)
    if gate is not None:
        gate(conn, target, label)
    previous = _labels(conn, name).get(label)
    _put_label(conn, name, label, target.version, time.time())
    return LabelChange(name, label, target.version, previous)


def remove_label(db: Database, name: str, label: str) -> LabelChange:
    """Remove ``label`` from prompt ``name`` (``latest`` stays; without ``production`` runs use ``latest``)."""
    _check_label(label)

    def go(conn: Conn) -> LabelChange:
        labels = _labels(conn, name)
        if not labels:
            raise _unknown_prompt(conn, name)
        if label not in labels:
            raise InvalidInput(f"prompt {name} has no label {label!r}; labels: {', '.join(_ordered(labels))}")
        conn.execute("DELETE FROM prompt_labels WHERE name = ? AND label = ?", (name, label))
        return LabelChange(name, label, None, labels[label])

    return db.run(go)


def list_prompts(db: Database) -> list[PromptSummary]:
    """Every stored prompt, by name, described by its latest version."""
    return db.query(summaries)


def summaries(conn: Conn) -> list[PromptSummary]:
    """:func:`list_prompts` on an open connection."""
    labels: dict[str, dict[str, str]] = {}
    for name, label, version in conn.all("SELECT name, label, version FROM prompt_labels"):
        labels.setdefault(name, {})[label] = version
    counts = dict(conn.all("SELECT name, COUNT(*) FROM prompt_versions GROUP BY name"))
    rows = conn.all(
        "SELECT v.name, v.metadata, v.created_at FROM prompt_versions v JOIN prompt_labels l"
        " ON l.name = v.name AND l.version = v.version WHERE l.label = ? ORDER BY v.name",
        (LATEST,),
    )
    return [
        PromptSummary(name, int(counts[name]), _ordered(labels[name]), json.loads(meta), float(at))
        for name, meta, at in rows
    ]


def diff(db: Database, name: str, a: str, b: str) -> str:
    """A unified diff of two versions (or labels) of a prompt's file; ``""`` when they are the same."""

    def both(conn: Conn) -> tuple[PromptVersion, PromptVersion]:
        return _resolve(conn, name, a), _resolve(conn, name, b)

    old, new = db.query(both)
    fromfile, tofile = (v.ref if x == v.version else f"{v.ref} ({x})" for v, x in ((old, a), (new, b)))
    lines = difflib.unified_diff(
        old.source.splitlines(), new.source.splitlines(), fromfile, tofile, lineterm=""
    )
    text = "\n".join(lines)
    return text + "\n" if text else ""


def prompt_versions(conn: Conn, name: str) -> list[PromptVersion]:
    """Every stored version of prompt ``name``, newest first, each with the labels pointing at it."""
    labels = _labels(conn, name)
    if not labels:
        raise _unknown_prompt(conn, name)
    rows = conn.all(
        "SELECT version, body, metadata, source, created_at FROM prompt_versions WHERE name = ?"
        " ORDER BY created_at DESC, version",
        (name,),
    )
    ordered = _ordered(labels)
    return [
        PromptVersion(
            name,
            version,
            body,
            json.loads(meta),
            labels=tuple(lb for lb, v in ordered.items() if v == version),
            source=source,
            created_at=float(at),
        )
        for version, body, meta, source, at in rows
    ]
