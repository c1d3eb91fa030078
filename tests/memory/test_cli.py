"""``crewline memory``: ingest with progress, search, show, history, snapshot, rollback, forget, stats."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from crewline.cli import main


@pytest.fixture
def cli(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    monkeypatch.chdir(tmp_path)  # no crewline.toml here: defaults, the local embedder
    monkeypatch.setenv("CREWLINE_DATABASE_URL", db_url)
    monkeypatch.delenv("CREWLINE_APP", raising=False)
    yield CliRunner()


def ok(cli: CliRunner, *args: str, code: int = 0) -> Result:
    result = cli.invoke(main, ["memory", *args], catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result


def test_ingest_search_show_history_rollback_forget(cli: CliRunner, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "refunds.md").write_text("# Refunds\nRefunds are possible within 14 days of delivery.")
    (docs / "shipping.html").write_text("<h1>Shipping</h1><p>We ship to Norway in five days.</p>")
    out = ok(cli, "ingest", str(docs), "--scope", "kb").output
    assert "2 added" in out and "0 failed" in out
    snap = ok(cli, "snapshot", "kb", "--label", "v1").output.split()[0]
    assert snap.startswith("snap_")

    found = json.loads(ok(cli, "search", "refund period", "--scope", "kb", "-k", "1", "--json").output)
    assert found[0]["heading"] == "Refunds" and found[0]["source"].endswith("refunds.md")
    table = ok(cli, "search", "Norway", "--scope", "kb").output
    assert "shipping.html > Shipping" in table

    shown = ok(cli, "show", found[0]["id"]).output
    assert "Refunds are possible within 14 days" in shown and "scope kb" in shown

    (docs / "refunds.md").write_text("# Refunds\nRefunds are possible within 30 days of delivery.")
    assert "1 updated" in ok(cli, "ingest", str(docs / "refunds.md"), "--scope", "kb").output
    history = ok(cli, "history", "kb").output
    assert "delete" in history and "add" in history
    assert "restored" in ok(cli, "rollback", "kb", "--to", "v1").output
    again = json.loads(ok(cli, "search", "refund period", "--scope", "kb", "-k", "1", "--json").output)
    assert "14 days" in again[0]["text"]

    stats = json.loads(ok(cli, "stats", "--json").output)
    assert stats["scopes"] == {"kb": 2} and stats["embedder"].startswith("model2vec")
    assert "forgot 2 items" in ok(cli, "forget", "kb", "--yes").output
    assert json.loads(ok(cli, "stats", "--json").output)["items"] == 0


def test_bad_input_exits_with_a_clear_message(cli: CliRunner, tmp_path: Path) -> None:
    (tmp_path / "bad.txt").write_bytes(b"\x00\x01binary")
    result = ok(cli, "ingest", str(tmp_path / "bad.txt"), "--scope", "kb", code=1)
    assert "bad.txt" in result.output and "binary" in result.output
    assert "no such file" in ok(cli, "ingest", "missing.md", "--scope", "kb", code=2).output
    assert "scope" in ok(cli, "search", "x", "--scope", "bad scope", code=2).output
    assert (
        "unknown operator"
        in ok(cli, "search", "x", "--scope", "kb", "--filter", '{"a": {"$x": 1}}', code=2).output
    )
    assert "not valid JSON" in ok(cli, "search", "x", "--scope", "kb", "--filter", "{", code=2).output
    assert "no memory item" in ok(cli, "show", "mem_nope", code=2).output
    assert "no snapshot" in ok(cli, "rollback", "kb", "--to", "nope", code=2).output


def test_reembed_reports_count(cli: CliRunner, tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("hello world")
    ok(cli, "ingest", str(tmp_path / "a.txt"), "--scope", "kb")
    assert "re-embedded 0 items" in ok(cli, "reembed").output  # same model: nothing to redo


def test_remember_then_search_and_bad_options(cli: CliRunner) -> None:
    out = ok(
        cli,
        "remember",
        "Ada prefers email over calls",
        "--scope",
        "customer:ada",
        "--ttl",
        "365d",
        "--meta",
        '{"source": "call notes"}',
    ).output
    assert out.startswith("added mem") or out.startswith("added ")
    assert "scope customer:ada" in out
    again = json.loads(
        ok(cli, "remember", "Ada prefers email over calls", "--scope", "customer:ada", "--json").output
    )
    assert again["action"] in ("updated", "unchanged")
    found = json.loads(ok(cli, "search", "how to contact Ada", "--scope", "customer:ada", "--json").output)
    assert found[0]["text"] == "Ada prefers email over calls"
    assert (
        "--meta is not valid JSON"
        in ok(cli, "remember", "x", "--scope", "s", "--meta", "{bad", code=2).output
    )
    assert "ttl" in ok(cli, "remember", "x", "--scope", "s", "--ttl", "soon", code=2).output


def test_purge_deletes_expired_items_now(cli: CliRunner) -> None:
    ok(cli, "remember", "Discount code SPRING", "--scope", "c:1", "--ttl", "1ms")
    ok(cli, "remember", "Prefers email", "--scope", "c:1")
    assert ok(cli, "purge").output.strip() == "purged 1 expired item"
    assert json.loads(ok(cli, "stats", "--json").output)["scopes"] == {"c:1": 1}
    assert ok(cli, "purge").output.strip() == "purged 0 expired items"
