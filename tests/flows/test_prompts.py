"""Prompt templates: files to versions by hash, labels, resolving, sandboxed rendering, the CLI."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel

from crewline.config import Settings
from crewline.errors import ConfigError, InvalidInput
from crewline.flows import prompts
from crewline.flows.prompts import (
    LATEST,
    PRODUCTION,
    aresolve,
    diff,
    list_prompts,
    prompts_dir,
    remove_label,
    render,
    resolve,
    set_label,
    split_ref,
    sync_prompts,
)
from crewline.store import Database, open_database

TRIAGE = """---
model: cheap
output: Triage
params: [email]
description: Classify one email
owner: ops
---
Subject: {{ email.subject }}
{% if email.urgent %}
This is urgent.
{% endif %}
From: {{ email.sender }}
"""


class Email(BaseModel):
    subject: str
    sender: str
    urgent: bool = False


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = open_database(db_url)
    yield database
    database.close()


@pytest.fixture
def pdir(tmp_path: Path) -> Path:
    (tmp_path / "prompts").mkdir()
    return tmp_path / "prompts"


def write(pdir: Path, name: str, text: str) -> str:
    """Write prompts/<name>.md; returns the version it should get."""
    path = pdir / f"{name}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def count(db: Database, table: str) -> int:
    return int(db.query(lambda conn: conn.scalar(f"SELECT COUNT(*) FROM {table}")))


def test_public_surface() -> None:
    assert prompts.__all__ == sorted(prompts.__all__, key=lambda n: (not n.isupper(), n))
    assert set(prompts.__all__) == {
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
    }


# -- sync and labels -----------------------------------------------------------------------------------


def test_sync_stores_each_file_by_content_hash_with_production_and_latest(db: Database, pdir: Path) -> None:
    v1 = write(pdir, "triage", TRIAGE)
    r1 = write(pdir, "support/reply", "Dear {{ name }},\n")
    changes = sync_prompts(db, pdir)
    assert [(c.name, c.version, c.kind, c.previous, c.production) for c in changes] == [
        ("support/reply", r1, "added", None, r1),
        ("triage", v1, "added", None, v1),
    ]
    triage = resolve(db, "triage")
    assert (triage.version, triage.label, triage.labels) == (v1, PRODUCTION, (PRODUCTION, LATEST))
    assert triage.meta == {
        "model": "cheap",
        "output": "Triage",
        "params": ["email"],
        "description": "Classify one email",
        "owner": "ops",
    }
    assert (triage.model, triage.output, triage.params) == ("cheap", "Triage", ("email",))
    assert triage.source == TRIAGE and triage.body.startswith("Subject:")
    assert resolve(db, "support/reply").body == "Dear {{ name }},\n"


def test_sync_is_idempotent_and_a_new_version_moves_only_latest(db: Database, pdir: Path) -> None:
    v1 = write(pdir, "triage", TRIAGE)
    sync_prompts(db, pdir)
    assert sync_prompts(db, pdir) == []
    assert (count(db, "prompt_versions"), count(db, "prompt_labels")) == (1, 2)

    v2 = write(pdir, "triage", TRIAGE + "Be brief.\n")
    [change] = sync_prompts(db, pdir)
    assert (change.kind, change.previous, change.version, change.production) == ("updated", v1, v2, v1)
    assert resolve(db, "triage").version == v1  # production did not move
    assert resolve(db, "triage@latest").version == v2
    assert sync_prompts(db, pdir) == []

    write(pdir, "triage", TRIAGE)  # back to the first text: no new version, latest follows the file
    [change] = sync_prompts(db, pdir)
    assert (change.kind, change.previous, change.version) == ("restored", v2, v1)
    assert count(db, "prompt_versions") == 2


def test_removing_a_file_keeps_its_versions(db: Database, pdir: Path) -> None:
    v1 = write(pdir, "triage", TRIAGE)
    sync_prompts(db, pdir)
    (pdir / "triage.md").unlink()
    assert sync_prompts(db, pdir) == []
    assert resolve(db, f"triage@{v1}").source == TRIAGE


def test_labels_move_by_version_prefix_or_other_label(db: Database, pdir: Path) -> None:
    v1 = write(pdir, "triage", TRIAGE)
    sync_prompts(db, pdir)
    v2 = write(pdir, "triage", TRIAGE + "v2\n")
    sync_prompts(db, pdir)

    change = set_label(db, "triage", "candidate", v2[:6])
    assert (change.version, change.previous) == (v2, None)
    candidate = resolve(db, "triage@candidate")
    assert (candidate.version, candidate.label, candidate.labels) == (v2, "candidate", (LATEST, "candidate"))

    change = set_label(db, "triage", PRODUCTION, "candidate")
    assert (change.version, change.previous) == (v2, v1)
    assert resolve(db, "triage").version == v2
    assert set_label(db, "triage", PRODUCTION, v1).previous == v2

    assert remove_label(db, "triage", PRODUCTION).previous == v1
    assert resolve(db, "triage").label == LATEST  # no production: runs use latest


def test_resolve_by_version_carries_no_label(db: Database, pdir: Path) -> None:
    v1 = write(pdir, "triage", TRIAGE)
    sync_prompts(db, pdir)
    by_version = resolve(db, f"triage@{v1}")
    assert (by_version.version, by_version.label, by_version.labels) == (v1, None, (PRODUCTION, LATEST))
    assert resolve(db, f"triage@{v1[:4]}").version == v1


async def test_aresolve_reads_from_the_event_loop(db: Database, pdir: Path) -> None:
    write(pdir, "triage", TRIAGE)
    sync_prompts(db, pdir)
    assert (await aresolve(db, "triage@latest")).name == "triage"


def test_list_and_diff(db: Database, pdir: Path) -> None:
    v1 = write(pdir, "triage", TRIAGE)
    write(pdir, "reply", "Hi\n")
    sync_prompts(db, pdir)
    v2 = write(pdir, "triage", TRIAGE.replace("cheap", "strong"))
    sync_prompts(db, pdir)

    listed = {s.name: s for s in list_prompts(db)}
    assert list(listed) == ["reply", "triage"]
    assert listed["triage"].versions == 2 and listed["triage"].meta["model"] == "strong"
    assert dict(listed["triage"].labels) == {PRODUCTION: v1, LATEST: v2}

    text = diff(db, "triage", PRODUCTION, v2)
    assert text.startswith(f"--- triage@{v1} (production)\n+++ triage@{v2}\n")
    assert "-model: cheap\n+model: strong\n" in text
    assert diff(db, "triage", PRODUCTION, v1) == ""


# -- bad references and labels ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("triag", "no prompt 'triag' (did you mean 'triage'?); known: reply, triage"),
        ("triage@candidate", "prompt triage has no label 'candidate'; labels: production, latest"),
        ("triage@abcdef", "prompt triage has no version 'abcdef'; versions: "),
        ("triage@", "prompt reference 'triage@' is not NAME, NAME@label or NAME@version"),
        ("@x", "is not NAME, NAME@label or NAME@version"),
    ],
)
def test_unknown_prompts_labels_and_versions_say_what_exists(
    db: Database, pdir: Path, ref: str, message: str
) -> None:
    write(pdir, "triage", TRIAGE)
    write(pdir, "reply", "Hi\n")
    sync_prompts(db, pdir)
    with pytest.raises(InvalidInput) as e:
        resolve(db, ref)
    assert message in str(e.value)


def test_resolve_before_any_sync_says_to_sync(db: Database) -> None:
    with pytest.raises(InvalidInput, match="no prompts are stored yet: run `crewline prompts sync`"):
        resolve(db, "triage")


@pytest.mark.parametrize(
    ("label", "message"),
    [
        (LATEST, "label 'latest' is moved by `crewline prompts sync`"),
        ("Prod!", "label 'Prod!' is not a valid label"),
        ("cafe", "label 'cafe' looks like a version hash"),
    ],
)
def test_bad_labels_are_refused(db: Database, pdir: Path, label: str, message: str) -> None:
    write(pdir, "triage", TRIAGE)
    sync_prompts(db, pdir)
    with pytest.raises(InvalidInput, match=message):
        set_label(db, "triage", label, LATEST)


def test_labelling_unknown_things_changes_nothing(db: Database, pdir: Path) -> None:
    write(pdir, "triage", TRIAGE)
    sync_prompts(db, pdir)
    with pytest.raises(InvalidInput, match="no prompt 'nope'"):
        set_label(db, "nope", "candidate", LATEST)
    with pytest.raises(InvalidInput, match="prompt triage has no version '0000'"):
        set_label(db, "triage", "candidate", "0000")
    with pytest.raises(InvalidInput, match="prompt triage has no label 'candidate'; labels: production"):
        remove_label(db, "triage", "candidate")
    assert count(db, "prompt_labels") == 2


def test_split_ref() -> None:
    assert split_ref("support/reply@candidate") == ("support/reply", "candidate")
    assert split_ref(" triage ") == ("triage", None)
    with pytest.raises(InvalidInput):
        split_ref("a@b@c")


# -- bad files ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("---\nparams: [a]\n---\nline one\n{{ a }\n", "prompts/bad.md line 5: template syntax error"),
        ("{% if x %}\nno end\n", "prompts/bad.md line 2: template syntax error"),
        ("---\nmodel: [cheap\n---\nbody\n", "prompts/bad.md line 3: front matter is not valid YAML"),
        ("---\nmodel: cheap\nbody\n", "prompts/bad.md: the front matter opened on line 1 is never closed"),
        ("---\n- a\n- b\n---\nbody\n", "prompts/bad.md: front matter must be a YAML mapping"),
        ("---\nparams: email\n---\nbody\n", "front matter 'params' must be a list of parameter names"),
        ("---\nmodel: 3\n---\nbody\n", "front matter 'model' must be a string, not 3"),
    ],
)
def test_a_bad_file_is_named_with_its_line_and_nothing_is_stored(
    db: Database, pdir: Path, text: str, message: str
) -> None:
    write(pdir, "good", "fine\n")
    write(pdir, "bad", text)
    with pytest.raises(InvalidInput, match=message):
        sync_prompts(db, pdir)
    assert count(db, "prompt_versions") == 0


def test_bad_names_encodings_and_directories(db: Database, pdir: Path, tmp_path: Path) -> None:
    write(pdir, "bad@name", "x\n")
    (pdir / "latin.md").write_bytes(b"caf\xe9\n")
    with pytest.raises(InvalidInput) as e:
        sync_prompts(db, pdir)
    assert "prompts/bad@name.md: prompt names may only use" in str(e.value)
    assert "prompts/latin.md is not UTF-8 text" in str(e.value)
    with pytest.raises(InvalidInput, match=r"no prompts directory at .*missing"):
        sync_prompts(db, tmp_path / "missing")


def test_prompts_dir_from_settings(tmp_path: Path) -> None:
    assert prompts_dir(Settings(project_dir=tmp_path)) == tmp_path / "prompts"
    configured = Settings(project_dir=tmp_path, sections={"prompts": {"dir": "config/prompts"}})
    assert prompts_dir(configured) == tmp_path / "config" / "prompts"
    with pytest.raises(ConfigError, match=r"\[prompts\] dir in crewline.toml must be a path"):
        prompts_dir(Settings(project_dir=tmp_path, sections={"prompts": {"dir": 3}}))


# -- rendering ----------------------------------------------------------------------------------------


@pytest.fixture
def triage(db: Database, pdir: Path) -> prompts.PromptVersion:
    write(pdir, "triage", TRIAGE)
    sync_prompts(db, pdir)
    return resolve(db, "triage")


def test_render_with_models_and_dicts(triage: prompts.PromptVersion) -> None:
    email = Email(subject="Refund", sender="ann@example.com", urgent=True)
    expected = "Subject: Refund\nThis is urgent.\nFrom: ann@example.com\n"
    assert render(triage, {"email": email}) == expected
    assert render(triage, {"email": email.model_dump()}) == expected
    calm = render(triage, {"email": {"subject": "Hi", "sender": "bo@example.com", "urgent": False}})
    assert calm == "Subject: Hi\nFrom: bo@example.com\n"


def test_a_model_or_dataclass_as_the_whole_input_gives_its_fields(db: Database, pdir: Path) -> None:
    @dataclasses.dataclass
    class Note:
        subject: str
        sender: str

    write(pdir, "short", "{{ subject }} / {{ sender }}")
    sync_prompts(db, pdir)
    short = resolve(db, "short")
    assert render(short, Email(subject="A", sender="b")) == "A / b"
    assert render(short, Note(subject="C", sender="d")) == "C / d"
    with pytest.raises(InvalidInput, match=r"must be a dict or a Pydantic model, not list"):
        render(short, [1, 2])


def test_missing_parameters_and_variables_name_prompt_version_and_variable(
    triage: prompts.PromptVersion,
) -> None:
    with pytest.raises(
        InvalidInput, match=rf"prompt triage@{triage.version} needs parameter\(s\) email; given: x"
    ):
        render(triage, {"x": 1})
    with pytest.raises(InvalidInput) as e:
        render(triage, {"email": {"subject": "Hi", "urgent": False}})
    assert str(e.value) == (  # line 12 of the file: the body's line 5, after 7 lines of front matter
        f"prompt triage@{triage.version} line 12: missing variable: 'dict object' has no attribute 'sender'"
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("{{ ''.__class__.__mro__ }}", "refused by the sandbox: access to attribute '__class__'"),
        ("{{ email.__dict__ }}", "refused by the sandbox: access to attribute '__dict__'"),
        ("{{ items.append(1) }}", "refused by the sandbox: access to attribute 'append'"),
        ("{{ cycler.__init__.__globals__ }}", "refused by the sandbox"),
        ("a\n{{ 1 / 0 }}", "line 2: cannot render: ZeroDivisionError"),
        ("{{ nothing }}", "missing variable: 'nothing' is undefined"),
    ],
)
def test_the_sandbox_refuses_unsafe_access_and_failures_are_clear(
    db: Database, pdir: Path, body: str, message: str
) -> None:
    write(pdir, "evil", body)
    sync_prompts(db, pdir)
    items = [0]
    with pytest.raises(InvalidInput, match=message):
        render(resolve(db, "evil"), {"email": Email(subject="s", sender="x"), "items": items})
    assert items == [0]


# -- the command line ---------------------------------------------------------------------------------


def _cli(url: str, project: Path):  # type: ignore[no-untyped-def]
    env = {**os.environ, "CREWLINE_DATABASE_URL": url, "CREWLINE_PROJECT_DIR": str(project)}

    def run(*args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "crewline", "prompts", *args],
            env=env,
            cwd=project,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == code, proc.stderr
        return proc

    return run


@pytest.fixture
def cli(db_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    return _cli(db_url, tmp_path)


@pytest.fixture
def cli_sqlite(sqlite_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    """The error paths do not depend on the backend: one run of each is enough."""
    return _cli(sqlite_url, tmp_path)


def test_cli_sync_list_show_label_diff(cli, pdir: Path) -> None:  # type: ignore[no-untyped-def]
    v1 = write(pdir, "triage", TRIAGE)
    assert cli("sync").stdout == f"added triage {v1} (production, latest)\n"
    assert cli("sync").stdout == "prompts are up to date\n"
    v2 = write(pdir, "triage", TRIAGE + "v2\n")
    assert f"updated triage {v1} -> {v2} (latest; production stays at {v1})" in cli("sync").stdout

    [listed] = json.loads(cli("list", "--json").stdout)
    assert (listed["name"], listed["versions"], listed["labels"]) == (
        "triage",
        2,
        {PRODUCTION: v1, LATEST: v2},
    )
    assert "triage" in cli("list").stdout

    shown = json.loads(cli("show", "triage@latest", "--json").stdout)
    assert (shown["version"], shown["label"], shown["meta"]["model"]) == (v2, LATEST, "cheap")
    rendered = cli(
        "show", "triage", "--render", '{"email": {"subject": "S", "sender": "x", "urgent": false}}'
    ).stdout
    assert rendered.startswith(f"triage@{v1}  (production)\n") and rendered.endswith(
        "---\nSubject: S\nFrom: x\n"
    )

    assert cli("label", "triage", "production", v2[:5]).stdout == f"triage: production -> {v2} (was {v1})\n"
    assert "+v2" in cli("diff", "triage", v1, PRODUCTION).stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["show", "triag"], "no prompt 'triag' (did you mean 'triage'?); known: triage"),
        (["show", "triage@candidate"], "prompt triage has no label 'candidate'; labels: production, latest"),
        (["show", "triage", "--render", "{}"], "needs parameter(s) email; given: none"),
        (["show", "triage", "--render", "[1]"], "--render must be a JSON object"),
        (["label", "triage", "latest", "x"], "label 'latest' is moved by `crewline prompts sync`"),
        (["label", "triage", "candidate"], "give the VERSION to point the label at, or --remove"),
        (["diff", "triage", "production", "nope"], "prompt triage has no label 'nope'"),
    ],
)
def test_cli_errors_are_one_line_exit_2(cli_sqlite, pdir: Path, args: list[str], message: str) -> None:  # type: ignore[no-untyped-def]
    write(pdir, "triage", TRIAGE)
    cli_sqlite("sync")
    proc = cli_sqlite(*args, code=2)
    assert proc.stderr.startswith("crewline: error: ") and message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_cli_sync_of_a_bad_template_names_the_file_and_line(cli, pdir: Path) -> None:  # type: ignore[no-untyped-def]
    write(pdir, "ok", "fine\n")
    write(pdir, "bad", "---\nmodel: cheap\n---\n{{ broken\n")
    proc = cli("sync", code=2)
    assert "prompts/bad.md line 4: template syntax error" in proc.stderr
    assert json.loads(cli("list", "--json").stdout) == []


async def test_versions_newest_first_with_their_labels_and_labels_moved_in_a_transaction(
    db: Database, pdir: Path
) -> None:
    v1 = write(pdir, "triage", TRIAGE)
    sync_prompts(db, pdir)
    v2 = write(pdir, "triage", TRIAGE + "v2\n")
    sync_prompts(db, pdir)
    listed = await db.read(lambda conn: prompts.prompt_versions(conn, "triage"))
    assert [(p.version, p.labels) for p in listed] == [(v2, (LATEST,)), (v1, (PRODUCTION,))]
    assert listed[1].source == TRIAGE
    change = await db.write(lambda conn: prompts.move_label(conn, "triage", PRODUCTION, v2))
    assert (change.version, change.previous) == (v2, v1)
    assert (await db.read(lambda conn: prompts.lookup(conn, "triage"))).version == v2
    with pytest.raises(InvalidInput, match="moved by `crewline prompts sync`"):
        await db.write(lambda conn: prompts.move_label(conn, "triage", LATEST, v1))
    with pytest.raises(InvalidInput, match="no prompt 'triag'"):
        await db.read(lambda conn: prompts.prompt_versions(conn, "triag"))
    assert [s.name for s in await db.read(prompts.summaries)] == ["triage"]
