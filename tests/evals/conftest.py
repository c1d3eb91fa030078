"""A project with a prompt and a dataset, its database, and a priced scripted model behind a gateway."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from crewline.config import Settings
from crewline.flows import prompts
from crewline.models import Gateway
from crewline.models.config import ModelsConfig
from crewline.store import Database, open_database
from crewline.testing import ScriptedModel

PROMPT_V1 = "---\nparams: [text]\nmodel: paid/m\n---\nClassify as spam or ham: {{ text }}\n"
PROMPT_V2 = "---\nparams: [text]\nmodel: paid/m\n---\nIs this spam or ham? {{ text }}\n"
CASES = [
    ("buy cheap pills", "spam"),
    ("lunch at noon?", "ham"),
    ("win a free cruise", "spam"),
    ("minutes of the meeting", "ham"),
    ("cheap loans today", "spam"),
    ("your parcel is late", "ham"),
    ("free money now", "spam"),
    ("see you tomorrow", "ham"),
    ("cheap watches", "spam"),
    ("call me back", "ham"),
    ("free gift inside", "spam"),
    ("dinner plans", "ham"),
]


@dataclass
class Project:
    dir: Path
    settings: Settings
    db: Database

    def write_prompt(self, text: str) -> str:
        (self.dir / "prompts" / "classify.md").write_text(text)
        prompts.sync_prompts(self.db, self.dir / "prompts")
        return prompts.resolve(self.db, "classify@latest").version

    def gateway(self, model: ScriptedModel, budgets: dict[str, object] | None = None) -> Gateway:
        # A price, so cost and budgets mean something: $1 per 1,000 output tokens.
        config = ModelsConfig.parse(
            {
                "providers": {"paid": {"format": "openai", "base_url": "http://127.0.0.1:9/v1"}},
                "prices": {"paid/m": {"input": 0.0, "output": 1000.0}},
                "budgets": budgets or {},
                "max_tokens": 10,
            }
        )
        return Gateway(config, self.db, adapters={"paid": model}, wait_for_records=True)


def write_dataset(root: Path, cases: list[tuple[str, str]] = CASES) -> None:
    lines = [f'{{"input": {{"text": "{t}"}}, "expected": "{e}", "split": "test"}}' for t, e in cases]
    (root / "evals" / "mail.jsonl").write_text("\n".join(lines) + "\n")


@pytest.fixture
def project(tmp_path: Path, db_url: str) -> Iterator[Project]:
    (tmp_path / "prompts").mkdir()
    (tmp_path / "evals").mkdir()
    write_dataset(tmp_path)
    db = open_database(db_url)
    p = Project(tmp_path, Settings(project_dir=tmp_path, database_url=db_url), db)
    p.write_prompt(PROMPT_V1)
    yield p
    db.close()


def classifier(right: bool = True) -> ScriptedModel:
    """Answers from the words of the case: right, or wrong on every 'ham'."""

    def answer(request: object) -> str:
        text = request.messages[-1].text  # type: ignore[attr-defined]
        spammy = any(w in text for w in ("cheap", "free", "win"))
        return "spam" if spammy or not right else "ham"

    return ScriptedModel(default=answer)
