"""Secrets: encrypted at rest, `crewline secrets set | list | rm` (values from stdin, never argv), rotation
without a restart, a clear refusal without a key, and no plaintext in any table or log line after a run."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from crewline import App, ConfigError, Context, InvalidInput, Settings
from crewline.cli.config import check_project
from crewline.connectors import registry
from crewline.secret_store import Credentials, SecretStore, SecretValue, new_key, secrets_key
from crewline.store import open_database

from .._leaks import logged, stored_at
from ..flows._drive import drive
from . import _counting
from ._counting import BUMP

ROOT = Path(__file__).resolve().parents[2]
PLAIN = "sk-live-4f9a77c0ffee-plaintext"
KEY = new_key()


@pytest.fixture(autouse=True)
def counting_type(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setitem(registry.TYPES, "counting", "tests.connectors._counting:CONNECTOR")
    monkeypatch.setenv("CREWLINE_SECRETS_KEY", KEY)
    _counting.CALLS.clear()
    yield


def _crewline(
    project: Path, *args: str, stdin: str = "", key: str | None = KEY
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CREWLINE_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT)])
    if key is not None:
        env["CREWLINE_SECRETS_KEY"] = key
    return subprocess.run(
        [sys.executable, "-m", "crewline", *args],
        env=env,
        cwd=project,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_cli_stores_lists_and_removes_secrets_and_never_shows_a_value(tmp_path: Path) -> None:
    (tmp_path / "crewline.toml").write_text('[crewline]\ndatabase_url = "sqlite:///db.sqlite"\n')
    stored = _crewline(tmp_path, "secrets", "set", "crm_token", stdin=PLAIN + "\n")
    assert stored.returncode == 0, stored.stderr
    assert "secret crm_token stored (version 1); reference it as secret:crm_token" in stored.stdout
    again = _crewline(tmp_path, "secrets", "set", "crm_token", stdin=PLAIN + "-2")
    assert "(version 2)" in again.stdout
    listed = _crewline(tmp_path, "secrets", "list")
    assert listed.returncode == 0 and "crm_token" in listed.stdout and PLAIN not in listed.stdout
    assert PLAIN not in stored_at(f"sqlite:///{tmp_path}/db.sqlite")
    # The value reads back with the key, and only with it.
    db = open_database(f"sqlite:///{tmp_path}/db.sqlite")
    try:
        import asyncio

        value = asyncio.run(
            SecretStore(db, secrets_key(Settings(), {"CREWLINE_SECRETS_KEY": KEY})).get("crm_token")
        )
        assert value.reveal() == PLAIN + "-2" and value.version == 2
    finally:
        db.close()
    wrong = _crewline(tmp_path, "secrets", "set", "x", stdin="v", key=new_key())
    assert wrong.returncode == 0  # another key may store another secret ...
    rm = _crewline(tmp_path, "secrets", "rm", "crm_token")
    assert rm.returncode == 0 and "secret crm_token removed" in rm.stdout
    missing = _crewline(tmp_path, "secrets", "rm", "crm_token")
    assert missing.returncode == 2 and "no secret named 'crm_token'" in missing.stderr
    for proc in (stored, again, listed, rm, missing):
        assert "Traceback" not in proc.stderr and PLAIN not in proc.stdout + proc.stderr


def test_without_a_key_the_cli_and_config_check_say_how_to_give_one(tmp_path: Path) -> None:
    toml = '[crewline]\ndatabase_url = "sqlite:///db.sqlite"\n[connectors.crm]\ntype = "counting"\ntoken = "secret:crm"\n'
    (tmp_path / "crewline.toml").write_text(toml)
    proc = _crewline(tmp_path, "secrets", "set", "crm", stdin=PLAIN, key=None)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "no secrets key: set CREWLINE_SECRETS_KEY (make one with `crewline secrets keygen`)" in proc.stderr
    report = check_project({"CREWLINE_PROJECT": str(tmp_path)})
    assert report.errors == [
        "[connectors.crm] token: secret:crm needs the secrets key: set CREWLINE_SECRETS_KEY or [secrets] "
        "key_file (make a key with `crewline secrets keygen`)"
    ]
    bad = check_project({"CREWLINE_PROJECT": str(tmp_path), "CREWLINE_SECRETS_KEY": "short"})
    assert any("CREWLINE_SECRETS_KEY is not a secrets key: it must be 32 bytes" in e for e in bad.errors)
    keygen = _crewline(tmp_path, "secrets", "keygen", key=None)
    assert len(keygen.stdout.strip()) == 44
    (tmp_path / "secrets.key").write_text(keygen.stdout)
    (tmp_path / "crewline.toml").write_text(toml + '[secrets]\nkey_file = "secrets.key"\n')
    assert check_project({"CREWLINE_PROJECT": str(tmp_path)}).errors == []


async def test_a_run_resolves_a_stored_secret_and_picks_up_a_rotation_without_a_restart(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    sections = {"connectors": {"crm": {"type": "counting", "token": "secret:crm_token"}}}
    app = App(db_url, settings=Settings(sections=sections))

    @app.workflow()
    async def bump(ctx: Context) -> Any:
        return await ctx.connector("crm").call(BUMP, n=1)

    try:
        store = SecretStore(app.db, secrets_key(app.settings, os.environ))
        missing = await drive(app, await app.start("bump"))
        assert missing.status == "failed"
        assert "no secret named 'crm_token': store it with `crewline secrets set crm_token`" in str(
            missing.error
        )
        await store.set("crm_token", PLAIN)
        assert (await drive(app, await app.start("bump"))).status == "completed"
        # Rotated by another process (its own store object): the built connector sees it on its next call.
        other = SecretStore(open_database(db_url), secrets_key(app.settings, os.environ))
        await other.set("crm_token", PLAIN + "-rotated")
        other.db.close()
        assert (await drive(app, await app.start("bump"))).status == "completed"
        assert [c["token"] for c in _counting.CALLS] == [PLAIN, PLAIN + "-rotated"]
        await app.aclose()
        assert PLAIN not in stored_at(db_url)
        assert PLAIN not in logged(caplog)
    finally:
        app.close()


async def test_a_value_never_shows_itself_and_a_wrong_key_says_so(sqlite_url: str) -> None:
    value = SecretValue(PLAIN)
    assert PLAIN not in repr(value) + str(value) + f"{value}" + repr([value]) + repr({"token": value})
    with pytest.raises(TypeError):
        import pickle

        pickle.dumps(value)
    db = open_database(sqlite_url)
    try:
        await SecretStore(db, secrets_key(Settings(), {"CREWLINE_SECRETS_KEY": KEY})).set("a", PLAIN)
        other = Credentials(db, secrets_key(Settings(), {"CREWLINE_SECRETS_KEY": new_key()}), {})
        with pytest.raises(ConfigError, match="is not the key it was stored with") as e:
            await other.resolve("secret:a", "[connectors.crm] token")
        assert str(e.value).startswith("[connectors.crm] token: ")
        with pytest.raises(ConfigError, match="must be a credential reference"):
            await other.resolve(PLAIN)
        with pytest.raises(InvalidInput, match="secret name"):
            await SecretStore(db, None).set("no spaces please", "x")
        assert PLAIN not in str(e.value)
    finally:
        db.close()
