"""The store: URLs, migrations from blank and from every earlier version, retention."""

from __future__ import annotations

import time
from typing import Any

import pytest

from crewline import App, Context
from crewline.errors import ConfigError, DatabaseUnavailable, MigrationError
from crewline.store import Database, open_database
from crewline.store.migrate import check, upgrade, versions
from crewline.store.migrations import components
from crewline.store.retention import prune


def schema(db: Database) -> dict[str, list[str]]:
    def read(conn: Any) -> dict[str, list[str]]:
        if conn.dialect.name == "sqlite":
            tables = [r[0] for r in conn.all("SELECT name FROM sqlite_master WHERE type = 'table'")]
            return {t: sorted(c[1] for c in conn.all(f'PRAGMA table_info("{t}")')) for t in tables}
        rows = conn.all(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = current_schema()"
        )
        out: dict[str, list[str]] = {}
        for t, c in rows:
            out.setdefault(t, []).append(c)
        return {t: sorted(cs) for t, cs in out.items()}

    return db.query(read)


def test_upgrade_from_blank_then_check(db_url: str) -> None:
    db = Database(db_url)
    try:
        with pytest.raises(MigrationError, match="crewline db upgrade"):
            check(db)
        applied = upgrade(db)
        assert applied and upgrade(db) == []  # idempotent
        check(db)
        latest = {c: ms[-1].version for c, ms in components().items() if ms}
        assert versions(db) == latest
    finally:
        db.close()


def earlier_versions() -> list[tuple[str, int]]:
    return [(c, m.version) for c, ms in components().items() for m in ms[:-1]] + [
        (c, 0) for c, ms in components().items() if ms
    ]


@pytest.mark.parametrize(("component", "version"), earlier_versions())
def test_upgrade_from_every_earlier_version(db_url: str, tmp_path: Any, component: str, version: int) -> None:
    reference = Database(f"sqlite:///{tmp_path}/reference.db") if db_url.startswith("sqlite") else None
    db = Database(db_url)
    try:
        upgrade(db, {component: version})
        assert versions(db).get(component, 0) == version
        upgrade(db)
        check(db)
        if reference is not None:
            upgrade(reference)
            assert schema(db) == schema(reference)
    finally:
        db.close()
        if reference is not None:
            reference.close()


def test_a_database_newer_than_the_code_is_refused(db_url: str) -> None:
    db = open_database(db_url)
    try:
        db.run(
            lambda c: c.execute("UPDATE schema_versions SET version = version + 1 WHERE component = 'engine'")
        )
        with pytest.raises(MigrationError, match="newer than this code"):
            check(db)
    finally:
        db.close()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://localhost/db", "unsupported database URL scheme 'mysql'"),
        ("sqlite://", "in-memory SQLite"),
    ],
)
def test_bad_urls_are_explained(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Database(url)


def test_unreachable_postgres_is_a_clear_error_without_the_password() -> None:
    db = Database("postgresql://someone:hunter2@127.0.0.1:1/nothing")
    with pytest.raises(DatabaseUnavailable) as info:
        db.query(lambda c: c.scalar("SELECT 1"))
    assert "hunter2" not in str(info.value) and "***" in str(info.value)
    assert "CREWLINE_DATABASE_URL" in str(info.value)


async def test_prune_drops_old_finished_payloads_and_orphan_blobs(db_url: str) -> None:
    app = App(db_url)
    big = "y" * 20_000

    async def produce(n: int) -> str:
        return big + str(n)

    @app.workflow()
    async def wf(ctx: Context, n: int) -> int:
        return len(await ctx.step(produce, n))

    @app.workflow()
    async def parked(ctx: Context) -> None:
        await ctx.wait_for("never")

    try:
        from tests.flows._drive import drive, step_once

        old = await app.start(wf, 1)
        await drive(app, old)
        recent = await app.start(wf, 2)
        await drive(app, recent)
        waiting = await app.start(parked)
        await step_once(app, "w")
        await app.db.write(
            lambda c: c.execute(
                "UPDATE runs SET finished_at = ? WHERE id = ?", (time.time() - 40 * 86400, old)
            )
        )
        planned = prune(app.db, 30 * 86400, dry_run=True)
        assert (await app.get_run(old)).input == 1 and len(await app.steps(old)) == 1  # nothing removed
        report = prune(app.db, 30 * 86400)
        assert report == planned and (report.runs, report.steps, report.blobs) == (1, 1, 1)
        assert report.blob_bytes > 20_000
        pruned = await app.get_run(old)
        assert pruned.status == "completed" and pruned.input is None and await app.steps(old) == []
        assert pruned.pruned_at is not None and (await app.get_run(recent)).pruned_at is None
        assert (await app.get_run(recent)).output == 20_001 and len(await app.steps(recent)) == 1
        assert (await app.get_run(waiting)).status == "waiting"
        assert prune(app.db, 30 * 86400, delete_runs=True).runs == 1
        assert {r.id for r in await app.list_runs()} == {recent, waiting}
    finally:
        app.close()


def _open_fresh_file(url: str, start: Any, out: Any) -> None:
    from crewline.store.dialects import dialect_for_url

    start.wait()
    try:
        conn = dialect_for_url(url).connect()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("CREATE TABLE IF NOT EXISTS t (x INTEGER)")
        conn.execute("INSERT INTO t VALUES (1)")
        conn.execute("COMMIT")
        out.put(conn.execute("PRAGMA journal_mode").fetchone()[0])
        conn.close()
    except Exception as e:  # reported to the parent, which fails the test with it
        out.put(f"{type(e).__name__}: {e}")


def test_processes_opening_a_new_sqlite_file_together_all_get_wal(tmp_path: Any) -> None:
    # A worker and `crewline run` started at the same moment both switch a brand-new file to WAL; SQLite
    # refuses the loser with "database is locked" without consulting the busy handler (a few percent of
    # such races before the fix), which once failed the second command with a traceback.
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    answers = []
    for round_ in range(40):
        start, out = ctx.Event(), ctx.Queue()
        url = f"sqlite:///{tmp_path}/race-{round_}.db"
        procs = [ctx.Process(target=_open_fresh_file, args=(url, start, out)) for _ in range(4)]
        for p in procs:
            p.start()
        start.set()
        for p in procs:
            p.join(60)
        answers += [out.get(timeout=5) for _ in procs]
    assert [a for a in answers if a != "wal"] == []


def test_retention_asks_each_component_for_its_payload_tables() -> None:
    from crewline.store.retention import payload_tables

    tables = {t.table: t for t in payload_tables()}
    assert {"runs", "steps", "events"} <= set(tables)
    assert [t.table for t in tables.values() if t.finished is not None] == ["runs"]
    assert tables["steps"].run_column == "run_id"


def test_bulk_inserts_return_each_rows_new_key_and_never_reuse_one(db_url: str) -> None:
    db = open_database(db_url)
    try:
        with db.transaction() as c:
            c.execute("CREATE TABLE bulk_rows (id {serial}, at {real} NOT NULL)")

        def add(rows: list[tuple[Any, ...]]) -> list[int]:
            with db.transaction() as c:
                return c.insert_rows("bulk_rows", ("at",), rows, "id")

        first = add([(float(i),) for i in range(3)])
        assert first == sorted(first) and len(set(first)) == 3
        # The largest key deleted is not handed out again (SQLite's AUTOINCREMENT, PostgreSQL's sequence).
        with db.transaction() as c:
            c.execute("DELETE FROM bulk_rows WHERE id = ?", (first[-1],))
        # Enough rows for several statements where the dialect splits them.
        second = add([(float(i),) for i in range(20_000)])
        assert second[0] > first[-1] and second == list(range(second[0], second[0] + 20_000))
        stored = db.query(
            lambda c: c.all("SELECT id, at FROM bulk_rows WHERE id >= ? ORDER BY id", (second[0],))
        )
        assert stored == [(key, float(i)) for i, key in enumerate(second)]
        assert add([]) == []
        # Without keys wanted, the rows still all go in.
        with db.transaction() as c:
            assert c.insert_rows("bulk_rows", ("at",), [(-1.0,)] * 5) == []
        assert db.query(lambda c: c.scalar("SELECT COUNT(*) FROM bulk_rows WHERE at = -1")) == 5
    finally:
        db.close()


def test_bulk_inserts_can_skip_rows_whose_unique_value_is_taken(db_url: str) -> None:
    # Stored already or earlier in the same call: skipped, the first one kept; on PostgreSQL too, where
    # bulk rows otherwise go through COPY, which cannot skip one.
    db = open_database(db_url)
    try:
        with db.transaction() as c:
            c.execute("CREATE TABLE bulk_named (name TEXT PRIMARY KEY, n INTEGER NOT NULL)")
            c.insert_rows("bulk_named", ("name", "n"), [("a", 1), ("b", 2)])
        rows = [("b", 20), ("c", 30), ("c", 31), *((f"x{i}", i) for i in range(9_000)), ("a", 10)]
        with db.transaction() as c:
            assert c.insert_rows("bulk_named", ("name", "n"), rows, unique="name") == []
        stored = dict(db.query(lambda c: c.all("SELECT name, n FROM bulk_named")))
        assert len(stored) == 9_003 and (stored["a"], stored["b"], stored["c"], stored["x8999"]) == (
            1,
            2,
            30,
            8999,
        )
        with pytest.raises(Exception, match=r"(?i)unique|duplicate"), db.transaction() as c:
            c.insert_rows("bulk_named", ("name", "n"), [("a", 5)])
    finally:
        db.close()


def test_steps_recorded_before_the_table_was_stored_along_its_key_are_kept(db_url: str) -> None:
    from crewline.flows.step_store import load_steps

    db = Database(db_url)
    try:
        upgrade(db, {"engine": 14})
        db.run(
            lambda c: [
                c.execute(
                    "INSERT INTO steps (run_id, step_no, name, kind, effect, status, output, started_at, shadowed) "
                    "VALUES (?, ?, ?, 'step', 'read', 'done', ?, ?, ?)",
                    (run, n, f"s{n}", str(n * 10), 1000.0 + n, None if n != 2 else '{"name": "x"}'),
                )
                for run in ("run-b", "run-a")
                for n in (3, 1, 2)
            ]
        )
        upgrade(db)
        check(db)
        steps = list(db.query(lambda c: load_steps(c, "run-a")).values())
        assert [(s.step_no, s.name, s.output, s.started_at) for s in steps] == [
            (n, f"s{n}", n * 10, 1000.0 + n) for n in (1, 2, 3)
        ]
        assert steps[1].shadowed == {"name": "x"}
        if db_url.startswith("sqlite"):
            sql = db.query(lambda c: c.scalar("SELECT sql FROM sqlite_master WHERE name = 'steps'"))
            assert sql.endswith("WITHOUT ROWID")
    finally:
        db.close()


def test_a_table_stored_along_its_key_keeps_its_rows_indexes_and_triggers(tmp_path: Any) -> None:
    db = Database(f"sqlite:///{tmp_path}/c.db")

    def build(c: Any) -> None:
        c.execute("CREATE TABLE t (k TEXT NOT NULL, n INTEGER NOT NULL, v TEXT, PRIMARY KEY (k, n)) STRICT")
        c.execute("CREATE INDEX t_v ON t (v)")
        c.execute("CREATE TABLE log (v TEXT)")
        c.execute("CREATE TRIGGER t_log AFTER INSERT ON t BEGIN INSERT INTO log VALUES (new.v); END")
        c.execute("INSERT INTO t VALUES ('b', 2, 'x'), ('a', 1, 'y')")

    try:
        db.run(build)
        db.run(lambda c: c.dialect.cluster_on_key(c.raw, "t"))
        db.run(lambda c: c.dialect.cluster_on_key(c.raw, "t"))  # a second time changes nothing
        db.run(lambda c: c.execute("INSERT INTO t VALUES ('c', 3, 'z')"))
        assert db.query(lambda c: c.all("SELECT k, n, v FROM t ORDER BY k, n")) == [
            ("a", 1, "y"),
            ("b", 2, "x"),
            ("c", 3, "z"),
        ]
        assert db.query(lambda c: c.all("SELECT v FROM log")) == [("x",), ("y",), ("z",)]
        sql = dict(db.query(lambda c: c.all("SELECT name, sql FROM sqlite_master WHERE tbl_name = 't'")))
        assert sql["t"].endswith("STRICT, WITHOUT ROWID") and "t_v" in sql and "t_log" in sql
        with pytest.raises(Exception, match="cannot store"):  # STRICT still holds
            db.run(lambda c: c.execute("INSERT INTO t VALUES ('d', 'four', 'w')"))
    finally:
        db.close()


def test_full_text_indexes_inserted_rows_in_runs_of_keys_and_an_old_insert_trigger_goes(db_url: str) -> None:
    from crewline.store.fulltext import TextQuery, TextTable

    table = TextTable(table="ft_rows", rowid="rid", columns=("body",), index="ft_rows_index")
    db = open_database(db_url)
    try:
        fulltext = db.dialect.fulltext
        with db.transaction() as c:
            c.execute("CREATE TABLE ft_rows (rid {serial}, body TEXT NOT NULL)")
            fulltext.create(c, table)
            if db.dialect.name == "sqlite":  # what a database made before inserts were indexed explicitly had
                c.execute(
                    "CREATE TRIGGER ft_rows_fts_insert AFTER INSERT ON ft_rows BEGIN "
                    "INSERT INTO ft_rows_index (rowid, body) VALUES (new.rid, new.body); END"
                )
            fulltext.drop_insert_trigger(c, table)
            keys = [1, 2, 3, 7, 9, 10]  # three runs
            c.execute(
                "INSERT INTO ft_rows (rid, body) VALUES " + ", ".join("(?, ?)" for _ in keys),
                [x for k in keys for x in (k, f"apple number{k}")],
            )
            fulltext.rows_added(c, table, keys)

        def hits(word: str) -> list[int]:
            return sorted(r for r, _ in db.query(lambda c: fulltext.search(c, table, TextQuery([word], 20))))

        assert hits("apple") == keys and hits("number7") == [7] and hits("number4") == []
        if db.dialect.name == "sqlite":  # each row indexed once: FTS5 finds its index as the rows make it
            with db.transaction() as c:
                c.execute("INSERT INTO ft_rows_index (ft_rows_index, rank) VALUES ('integrity-check', 1)")
    finally:
        db.close()
