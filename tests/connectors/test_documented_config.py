"""The connector configuration a user copies is accepted by ``crewline config check``: the README's
sections (HTTP, email, Slack, MCP) and the example project's commented-out mailbox, outbox, trigger,
Slack and MCP sections once switched on, with the credentials they reference given."""

from __future__ import annotations

import re
from pathlib import Path

from crewline.cli.config import check_project
from crewline.secret_store import new_key

ROOT = Path(__file__).resolve().parents[2]
# What the documented references name: the secrets key (for secret:) and each env: variable.
GIVEN = {
    "CREWLINE_SECRETS_KEY": new_key(),
    "SLACK_BOT_TOKEN": "xoxb-1",
    "SLACK_SIGNING_SECRET": "signing",
    "FILES_MCP_AUTH": "Bearer t",
    "CRM_TOKEN": "t",
}
CONNECTOR_HEADINGS = ("#### HTTP APIs", "#### Email", "#### MCP", "### Slack")


def switched_on(toml: str) -> str:
    """The example with each commented-out TOML line (a table, or a key right after ``# ``) uncommented."""
    return re.sub(r"(?m)^# (?=\[|[a-z_]+ = )", "", toml)


def readme_sections() -> str:
    """The TOML blocks of the README's connector sections, one after another."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = []
    for heading in CONNECTOR_HEADINGS:
        section = re.split(r"\n#{2,} ", readme.split(heading + "\n", 1)[1], maxsplit=1)[0]
        blocks += re.findall(r"```toml\n(.*?)```", section, re.S)
    return "\n".join(b for b in blocks if not b.startswith("[secrets]"))


def check(project: Path, toml: str, environ: dict[str, str]) -> list[str]:
    (project / "crewline.toml").write_text(toml, encoding="utf-8")
    report = check_project({"CREWLINE_PROJECT": str(project), **environ})
    return [*report.errors, *report.warnings]


def test_the_example_projects_mail_slack_and_mcp_sections_check_ok_once_switched_on(tmp_path: Path) -> None:
    toml = switched_on((ROOT / "examples" / "crewline.toml").read_text(encoding="utf-8"))
    for table in (
        "connectors.mail",
        "connectors.outbox",
        "triggers.inbox",
        "connectors.slack",
        "connectors.files",
    ):
        assert f"\n[{table}]\n" in toml
    assert '\nslack = "slack"' in toml
    assert check(tmp_path, toml, GIVEN) == []
    # Without the credentials each reference is named, so a clean check above means they were resolved.
    problems = "\n".join(check(tmp_path, toml, {}))
    for name in ("MAIL_PASSWORD", "SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "FILES_MCP_AUTH"):
        assert name in problems


def test_the_readmes_connector_sections_check_ok(tmp_path: Path) -> None:
    toml = readme_sections()
    for table in ("connectors.crm", "connectors.mail", "connectors.outbox", "connectors.slack", "mcp"):
        assert f"[{table}]" in toml
    assert check(tmp_path, toml, GIVEN) == []
