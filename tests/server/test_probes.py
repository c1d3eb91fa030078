"""Probes an attacker (or a careless client) would try, each as a table: oversized and malformed bodies on
every endpoint that takes one, SQL metacharacters in every filter and search, path traversal in prompt
names, CR/LF in URLs and headers crewline sends from configuration, replayed signatures."""

from __future__ import annotations

from pathlib import Path

import pytest

from crewline.cli.config import check_project

INJECTED = "https://a.example/done\r\nX-Injected: 1"

# Each setting that becomes a URL crewline calls or a header it sends, with CR/LF in it, and what the
# error must name. The environment holds the webhook's secret and the alert channel's URL.
HEADER_INJECTIONS: list[tuple[str, str]] = [
    (
        '[webhooks.orders]\nworkflow = "order"\nsecret_env = "HOOK_SECRET"\n'
        'callback_url = "https://a.example/done\\r\\nX-Injected: 1"\n',
        "[webhooks.orders] callback_url",
    ),
    (
        '[models.providers.east]\nformat = "openai"\nbase_url = "https://a.example/v1\\r\\nX-Injected: 1"\n',
        "[models.providers.east] base_url",
    ),
    (
        '[models.providers.east]\nformat = "openai"\nbase_url = "https://a.example/v1"\n'
        '[models.providers.east.headers]\nX-Team = "ops\\r\\nX-Injected: 1"\n',
        "X-Team",
    ),
    (
        '[models.providers.east]\nformat = "openai"\nbase_url = "https://a.example/v1"\n'
        '[models.providers.east.headers]\n"X-Team\\r\\nX-Injected" = "1"\n',
        "a header name is one word",
    ),
    (
        '[connectors.crm]\ntype = "http"\nbase_url = "https://a.example/v1\\nX-Injected: 1"\n',
        "base_url",
    ),
    (
        '[connectors.crm]\ntype = "http"\nbase_url = "https://a.example/v1"\n'
        '[connectors.crm.headers]\nX-Team = "ops\\r\\nX-Injected: 1"\n',
        "X-Team",
    ),
    (
        '[connectors.chat]\ntype = "slack"\nbot_token = "env:HOOK_SECRET"\n'
        'base_url = "https://a.example/api\\r\\nX-Injected: 1"\n',
        "base_url",
    ),
    (
        '[alerts.channels.hook]\ntype = "webhook"\nurl_env = "ALERT_URL"\nsecret_env = "HOOK_SECRET"\n',
        "[alerts.channels.hook] url_env: the variable ALERT_URL",
    ),
]


@pytest.mark.parametrize(("toml", "named"), HEADER_INJECTIONS)
def test_line_breaks_in_urls_and_headers_are_refused_at_config_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, toml: str, named: str
) -> None:
    (tmp_path / "crewline.toml").write_text(toml)
    monkeypatch.chdir(tmp_path)
    env = {"HOOK_SECRET": "s3cret-for-hooks", "ALERT_URL": INJECTED}
    report = check_project(env)
    problems = [e for e in report.errors if named in e]
    assert problems, report.errors
    assert all("X-Injected" not in e and "s3cret" not in e for e in report.errors), report.errors
