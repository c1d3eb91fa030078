"""Ingest: files and directories, re-ingest diffs, atomicity per document, rollback of documents."""

from __future__ import annotations

from pathlib import Path

import pytest

from crewline.errors import InvalidInput
from crewline.memory import MemoryStore
from crewline.store.database import Conn

from ._pdf import make_pdf
from .conftest import run


def write_kb(root: Path) -> None:
    (root / "guide.md").write_text(
        "# Guide\n\n## Reset password\nOpen Settings, then Security, then Reset.\n"
    )
    (root / "billing.html").write_text("<h1>Billing</h1><p>Invoices are sent on the first of the month.</p>")
    (root / "notes.txt").write_text("Support hours are 9 to 17 CET on weekdays.")
    (root / "warranty.pdf").write_bytes(make_pdf(["The warranty lasts two years from delivery."]))
    (root / ".hidden").mkdir()
    (root / ".hidden" / "skip.md").write_text("# should not be ingested")
    (root / "image.png").write_bytes(b"\x89PNG")


def chunk_count(store: MemoryStore, scope: str) -> int:
    return int(
        store.db.query(lambda c: c.scalar("SELECT COUNT(*) FROM memory_items WHERE scope = ?", (scope,)))
    )


def test_ingest_directory_indexes_every_supported_file(store: MemoryStore, tmp_path: Path) -> None:
    write_kb(tmp_path)
    seen: list[tuple[str, str]] = []
    report = run(store.ingest(tmp_path, scope="kb", progress=lambda p, o: seen.append((p.name, o))))
    assert report.ok and len(report.added) == 4
    assert sorted(n for n, _ in seen) == ["billing.html", "guide.md", "notes.txt", "warranty.pdf"]
    docs = run(store.documents("kb"))
    assert sorted(d.mime for d in docs) == ["application/pdf", "text/html", "text/markdown", "text/plain"]
    hit = run(store.search("how long is the warranty", scope="kb", k=1))[0]
    assert hit.source == str((tmp_path / "warranty.pdf").resolve())
    assert hit.heading == "page 1" and hit.kind == "chunk" and hit.position == 0
    hit = run(store.search("reset my password", scope="kb", k=1))[0]
    assert hit.heading == "Guide > Reset password" and hit.metadata["mime"] == "text/markdown"


def test_bad_file_is_reported_and_the_rest_ingested(store: MemoryStore, tmp_path: Path) -> None:
    (tmp_path / "good.md").write_text("# Good\ncontent")
    (tmp_path / "bad.txt").write_bytes(b"\xff\xfe\x00\x00binary")
    report = run(store.ingest(tmp_path, scope="kb"))
    assert len(report.added) == 1
    assert list(report.failed) == [str(tmp_path / "bad.txt")]
    assert "binary" in report.failed[str(tmp_path / "bad.txt")]


def test_many_files_in_flight_report_in_file_order(store: MemoryStore, tmp_path: Path) -> None:
    # Documents are ingested several at a time; the report still lists them in file order, and a bad
    # file in the middle costs only itself.
    names = [f"doc-{i:02}.md" for i in range(12)]
    for i, name in enumerate(names):
        (tmp_path / name).write_text(f"# Doc {i}\n\n## Part\nFact number {i} about topic {i}.")
    (tmp_path / "doc-05.md").write_bytes(b"\xff\xfe\x00\x00binary")
    seen: list[str] = []
    report = run(store.ingest(tmp_path, scope="kb", progress=lambda p, o: seen.append(p.name)))
    assert list(report.failed) == [str(tmp_path / "doc-05.md")] and sorted(seen) == names
    docs = {d.id: d.source for d in run(store.documents("kb"))}
    good = [str((tmp_path / n).resolve()) for n in names if n != "doc-05.md"]
    assert [docs[i] for i in report.added] == good
    assert report.chunks_added == 11 and chunk_count(store, "kb") == 11


def test_missing_path_and_unsupported_file(store: MemoryStore, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="no such file"):
        run(store.ingest(tmp_path / "nope", scope="kb"))
    (tmp_path / "x.docx").write_bytes(b"PK")
    report = run(store.ingest(tmp_path / "x.docx", scope="kb"))
    assert "unsupported file type" in report.failed[str(tmp_path / "x.docx")]


def test_reingest_is_idempotent_and_diffs_changed_documents(store: MemoryStore, tmp_path: Path) -> None:
    store.chunk_size, store.chunk_overlap = 200, 0
    path = tmp_path / "faq.md"
    sections = [f"## Q{i}\nAnswer number {i} explains topic {i} in detail." for i in range(5)]
    path.write_text("# FAQ\n" + "\n\n".join(sections))
    first = run(store.ingest(path, scope="kb"))
    assert first.chunks_added == 5
    again = run(store.ingest(path, scope="kb"))
    assert again.unchanged == first.added and again.chunks_added == 0
    sections[2] = "## Q2\nAnswer two was rewritten about refunds."
    path.write_text("# FAQ\n" + "\n\n".join(sections))
    changed = run(store.ingest(path, scope="kb"))
    assert changed.updated == first.added
    assert (changed.chunks_added, changed.chunks_removed, changed.chunks_kept) == (1, 1, 4)
    assert chunk_count(store, "kb") == 5
    assert "refunds" in run(store.search("refunds", scope="kb", k=1))[0].text


def test_failed_write_leaves_nothing_half_indexed_and_can_rerun(
    store: MemoryStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.chunk_size, store.chunk_overlap = 200, 0
    path = tmp_path / "long.md"
    path.write_text("# Long\n" + "\n\n".join(f"## Part {i}\nText of part {i}." for i in range(10)))
    real = Conn.insert_rows
    calls = {"n": 0}

    def flaky(*args: object, **kwargs: object) -> object:
        calls["n"] += 1
        if calls["n"] == 2:  # the chunks are in, their versions fail
            raise RuntimeError("disk full")
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Conn, "insert_rows", flaky)
    with pytest.raises(RuntimeError, match="disk full"):
        run(store.ingest(path, scope="kb"))
    assert chunk_count(store, "kb") == 0
    assert run(store.documents("kb")) == []
    assert store.db.query(lambda c: c.scalar("SELECT COUNT(*) FROM memory_versions")) == 0
    monkeypatch.setattr(Conn, "insert_rows", real)
    report = run(store.ingest(path, scope="kb"))
    assert report.chunks_added == 10 and chunk_count(store, "kb") == 10


def test_rollback_brings_back_the_previous_document(store: MemoryStore, tmp_path: Path) -> None:
    path = tmp_path / "policy.md"
    path.write_text("# Policy\nRefunds are possible within 14 days.")
    run(store.ingest(path, scope="kb"))
    snap = run(store.snapshot("kb"))
    path.write_text("# Policy\nRefunds are possible within 30 days.")
    run(store.ingest(path, scope="kb"))
    run(store.rollback("kb", to=snap.id))
    hits = run(store.search("refund days", scope="kb", k=5))
    assert [h.text for h in hits] == ["Refunds are possible within 14 days."]
    (doc,) = run(store.documents("kb"))
    assert doc.version == 3 and doc.chunks == 1
    # and a re-ingest of the current file sees the rolled-back text as different
    assert run(store.ingest(path, scope="kb")).updated == [doc.id]


def test_ingest_text_directly(store: MemoryStore) -> None:
    report = run(
        store.ingest_text("<h1>Hi</h1><p>Hello there</p>", source="web:home", scope="site", mime="text/html")
    )
    assert report.chunks_added == 1
    assert run(store.search("hello", scope="site", k=1))[0].source == "web:home"


def test_delete_a_document_with_its_chunks_and_restore_it(store: MemoryStore) -> None:
    report = run(store.ingest_text("# A\none\n\n# B\ntwo", source="ab.md", scope="kb", mime="text/markdown"))
    (doc_id,) = report.added
    snap = run(store.snapshot("kb"))
    assert run(store.delete(doc_id)) is True
    assert chunk_count(store, "kb") == 0 and run(store.documents("kb")) == []
    assert run(store.delete(doc_id)) is False
    run(store.rollback("kb", to=snap.id))
    assert chunk_count(store, "kb") == 2 and [d.id for d in run(store.documents("kb"))] == [doc_id]


def test_a_batch_with_a_duplicate_and_a_failing_document(store: MemoryStore, tmp_path: Path) -> None:
    # Documents are written many to a transaction: one that cannot be read costs only itself, a file
    # named twice is written once (the second sees it unchanged), a repeated chunk gets its own row,
    # and every document of the batch is its own version that a rollback can take back.
    (tmp_path / "a.md").write_text("# A\n\n## One\nAlpha facts about apples.")
    snap = run(store.snapshot("kb"))
    (tmp_path / "a.md").write_text(
        "# A\n\n## One\nAlpha facts about apples.\n\n## One\nAlpha facts about apples."
    )
    (tmp_path / "b.txt").write_text("Bravo facts about bananas.")
    (tmp_path / "c.txt").write_bytes(b"\xff\xfe\x00\x00binary")
    (tmp_path / "d.html").write_text("<h1>D</h1><p>Delta facts about dates.</p>")
    seen: list[tuple[str, str]] = []
    report = run(
        store.ingest(
            [tmp_path, tmp_path / "b.txt"], scope="kb", progress=lambda p, o: seen.append((p.name, o))
        )
    )
    assert list(report.failed) == [str(tmp_path / "c.txt")]
    assert sorted(seen) == [
        ("a.md", "added"),
        ("b.txt", "added"),
        ("b.txt", "unchanged"),
        ("c.txt", "failed"),
        ("d.html", "added"),
    ]
    assert len(report.added) == 3 and report.unchanged == [report.added[1]]
    assert report.chunks_added == 4 and chunk_count(store, "kb") == 4
    (a_doc,) = [d for d in run(store.documents("kb")) if d.source.endswith("a.md")]
    a_chunks = [i for i in run(store.items("kb", kind="chunk")) if i.document_id == a_doc.id]
    assert [c.position for c in a_chunks] == [0, 1] and len({c.id for c in a_chunks}) == 2
    # Rewriting one document in the next run keeps the other chunks and versions each document alone.
    (tmp_path / "a.md").write_text("# A\n\n## One\nAlpha facts about apricots.")
    again = run(store.ingest(tmp_path, scope="kb"))
    assert (
        again.updated == [a_doc.id]
        and len(again.unchanged) == 2
        and list(again.failed) == [str(tmp_path / "c.txt")]
    )
    assert (again.chunks_added, again.chunks_removed, again.chunks_kept) == (1, 2, 0)
    assert [v.version for v in run(store.history(a_doc.id))] == [1, 2]
    run(store.rollback("kb", to=snap.id))
    assert chunk_count(store, "kb") == 0 and run(store.documents("kb")) == []


def test_a_document_larger_than_one_insert_goes_in_whole_and_rolls_back(
    store: MemoryStore, tmp_path: Path
) -> None:
    # More chunks than one multi-row INSERT holds (1,024): the rows span statements within one
    # transaction, each chunk is found, and a rollback removes every one of them.
    store.chunk_size, store.chunk_overlap = 100, 0
    path = tmp_path / "big.md"
    path.write_text("# Big\n" + "\n\n".join(f"## P{i}\nFact {i} is item{i}." for i in range(1100)))
    snap = run(store.snapshot("kb"))
    report = run(store.ingest(path, scope="kb"))
    assert report.chunks_added == 1100 and chunk_count(store, "kb") == 1100
    assert run(store.search("item1099", scope="kb", k=1))[0].text == "Fact 1099 is item1099."
    run(store.rollback("kb", to=snap.id))
    assert chunk_count(store, "kb") == 0 and run(store.documents("kb")) == []


def test_the_full_text_index_holds_exactly_the_stored_items_through_every_kind_of_write(
    store: MemoryStore, tmp_path: Path
) -> None:
    # Inserts are indexed by the items' writer (a statement per bulk insert), updates and deletes by
    # triggers: after ingests, a re-ingest that moves, keeps and drops chunks, a remembered fact, a
    # delete and a rollback, each word is found in exactly the rows holding it, and on SQLite FTS5's own
    # check finds its index equal to what indexing the stored rows afresh gives.
    path = tmp_path / "kb.md"
    path.write_text("# KB\n" + "\n\n".join(f"## P{i}\nFact {i} is word{i}." for i in range(300)))
    snap = run(store.snapshot("kb"))
    run(store.ingest(path, scope="kb"))
    path.write_text("# KB\n" + "\n\n".join(f"## P{i}\nFact {i} is word{i}." for i in range(100, 450)))
    run(store.ingest(path, scope="kb"))
    fact = run(store.remember("The spare key is word9999.", scope="kb"))
    run(store.ingest_text("# Gone\nword7777 here", source="gone.md", scope="kb", mime="text/markdown"))
    (gone,) = [d.id for d in run(store.documents("kb")) if d.source == "gone.md"]
    assert run(store.delete(gone)) is True

    def found(word: str) -> list[str]:
        return [h.text for h in run(store.search(word, scope="kb", k=5, vector_weight=0.0))]

    assert found("word50") == [] and found("word100") == ["Fact 100 is word100."]
    assert found("word449") == ["Fact 449 is word449."] and found("word7777") == []
    assert found("word9999") == ["The spare key is word9999."] and fact.id

    def intact(conn: Conn) -> None:
        if conn.dialect.name == "sqlite":
            conn.execute("INSERT INTO memory_fts (memory_fts, rank) VALUES ('integrity-check', 1)")

    store.db.query(intact)
    run(store.rollback("kb", to=snap.id))
    assert found("word100") == [] and chunk_count(store, "kb") == 0
    store.db.query(intact)
