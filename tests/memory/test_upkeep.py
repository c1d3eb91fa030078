"""Memory upkeep: expired items purged by the workers on a schedule, once an interval across processes."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from crewline import App, ConfigError, Settings
from crewline.cli.config import check_project
from crewline.memory import LocalEmbedder, MemoryStore
from crewline.memory.upkeep import purge_every, purge_if_due
from crewline.store import Database, open_database

from .conftest import run


def test_the_purge_runs_once_an_interval_across_processes(
    db: Database, db_url: str, store: MemoryStore
) -> None:
    gone = run(store.remember("Discount code SPRING", scope="c:1", ttl="1s"))
    kept = run(store.remember("Prefers email", scope="c:1"))
    other = open_database(db_url)  # a second process on the same database
    try:
        later = time.time() + 10
        first = run(db.write(lambda c: purge_if_due(c, now=later, every=3600)))
        second = run(other.write(lambda c: purge_if_due(c, now=later + 1, every=3600)))
        assert first.purged == 1 and first.next_at == later + 3600
        assert second.purged is None and second.next_at == later + 3600  # done this interval, elsewhere
        third = run(other.write(lambda c: purge_if_due(c, now=later + 3600, every=3600)))
        assert third.purged == 0 and third.next_at == later + 7200
    finally:
        other.close()
    assert run(store.get(gone.id)) is None
    assert run(store.get(kept.id)) is not None
    assert [v.op for v in run(store.history(gone.id))] == ["add", "expire"]


def test_workers_purge_expired_items_on_their_schedule(db_url: str, embedder: LocalEmbedder) -> None:
    app = App(db_url, settings=Settings(sections={"memory": {"purge_every": "1s"}}))
    store = MemoryStore(app.db, embedder)

    async def scenario() -> bool:
        expiring = await store.remember("Discount code SPRING", scope="c:1", ttl="1s")
        worker = app.worker(concurrency=1)
        running = asyncio.create_task(worker.run())
        try:
            for _ in range(600):  # until purged, or give up after about a minute
                if await store.get(expiring.id) is None:
                    return True
                await asyncio.sleep(0.1)
            return False
        finally:
            worker.stop()
            await running

    try:
        assert asyncio.run(scenario())
    finally:
        app.close()


@pytest.mark.parametrize(("value", "seconds"), [(None, 3600.0), ("15m", 900.0), (120, 120.0), ("off", None)])
def test_purge_every_reads_durations(value: object, seconds: float | None) -> None:
    section = {} if value is None else {"purge_every": value}
    assert purge_every(section) == seconds


@pytest.mark.parametrize("value", ["soon", "0s", -5, True, ["1h"]])
def test_a_bad_purge_every_names_the_key(value: object) -> None:
    with pytest.raises(ConfigError, match=r"\[memory\] purge_every"):
        purge_every({"purge_every": value})


def test_config_check_names_a_bad_purge_every(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "crewline.toml").write_text('[memory]\npurge_every = "soon"\n')
    monkeypatch.chdir(tmp_path)
    report = check_project({"CREWLINE_PROJECT": str(tmp_path)})
    assert [e for e in report.errors if "purge_every" in e] == [
        "[memory] purge_every: cannot read duration 'soon': use a number of seconds or a number with "
        'ms, s, m, h, d or w (or "off" to never purge on a schedule)'
    ]
