"""Benchmark the memory store: ingest rate, hybrid search latency and recall, against LanceDB.

For each corpus size it ingests N chunks (synthetic Markdown documents of English words, one chunk per
section) through the real pipeline (``MemoryStore.ingest`` of a folder of files: read, parse, chunk,
embed with the bundled Model2Vec model, versioned writes of many documents per transaction), then times
``MemoryStore.search`` (query embedding + exact vector + full text + RRF + row load) over a fixed set
of queries, and measures recall@10 of the vector side against exact brute force over the
stored embeddings. The same texts, embeddings and queries go to LanceDB (embedded, native FTS, hybrid
query with its RRF reranker) in the same run. Prints one table; nothing here is a pass/fail test.

    bench/run-memory                                   # 10k and 100k, SQLite (+ PostgreSQL if reachable)
    bench/run-memory --sizes 10000 --db sqlite --engines crewline
    bench/run-memory --sizes 10000 --db sqlite --before main --runs 3   # ingest against another revision
    bench/run-memory --sizes 10000 --db sqlite --before main --runs 3 --no-search   # and LanceDB, ingest only
    .venv/bin/python bench/memory.py --engines crewline   # without LanceDB, in the project venv
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from crewline.memory import LocalEmbedder, MemoryStore
from crewline.memory.fulltext import TextIndex
from crewline.memory.retrieval import fuse
from crewline.memory.vectors import from_blob
from crewline.store import Database, open_database

SECTIONS_PER_DOC = 50


@dataclass
class Row:
    engine: str
    db: str
    n: int
    ingest_per_s: float
    p50_ms: float
    p95_ms: float
    recall: float
    note: str = ""
    hybrid_recall: float | None = None
    rss_mb: float | None = None


# -- corpus ----------------------------------------------------------------------------------------------


def vocabulary() -> list[str]:
    """Real English words: the alphabetic entries of the bundled model's tokenizer vocabulary."""
    import static_model

    tok = json.loads((Path(static_model.__file__).parent / "model" / "tokenizer.json").read_text())
    vocab = tok["model"]["vocab"]
    words = vocab if isinstance(vocab, dict) else dict(vocab)
    return sorted(w for w in words if w.isalpha() and w.isascii() and 3 <= len(w) <= 12)


def corpus(n: int, seed: int = 1) -> list[str]:
    """``n`` chunk texts of 40-90 words drawn with a Zipf-like skew, so some words are common."""
    words = vocabulary()
    rng = np.random.default_rng(seed)
    ranks = np.arange(1, len(words) + 1)
    p = (1 / ranks**0.9) / (1 / ranks**0.9).sum()
    perm = rng.permutation(len(words))
    out = []
    for _ in range(n):
        idx = rng.choice(len(words), size=int(rng.integers(40, 90)), p=p)
        out.append(" ".join(words[perm[i]] for i in idx).capitalize() + ".")
    return out


def queries(texts: list[str], count: int, seed: int = 2) -> list[str]:
    rng = np.random.default_rng(seed)
    out = []
    for i in rng.choice(len(texts), size=count, replace=False):
        words = texts[int(i)].rstrip(".").split()
        pick = rng.choice(len(words), size=min(len(words), int(rng.integers(3, 7))), replace=False)
        out.append(" ".join(words[int(j)] for j in sorted(pick)))
    return out


def documents(texts: list[str]) -> Iterator[tuple[str, str]]:
    for d in range(0, len(texts), SECTIONS_PER_DOC):
        part = texts[d : d + SECTIONS_PER_DOC]
        body = "\n\n".join(f"## Section {d + i}\n{t}" for i, t in enumerate(part))
        yield f"bench/doc-{d // SECTIONS_PER_DOC}.md", f"# Document {d // SECTIONS_PER_DOC}\n\n{body}"


def percentiles(samples: list[float]) -> tuple[float, float]:
    qs = statistics.quantiles(samples, n=100, method="inclusive")
    return qs[49] * 1000, qs[94] * 1000


def recall_at(found: list[list[Any]], exact: list[list[Any]], k: int = 10) -> float:
    return float(np.mean([len(set(f[:k]) & set(e[:k])) / k for f, e in zip(found, exact, strict=True)]))


# -- crewline --------------------------------------------------------------------------------------------


async def ingest_rate(url: str, texts: list[str], embedder: LocalEmbedder) -> float:
    """Chunks per second of ``MemoryStore.ingest`` of ``texts`` as Markdown files into an empty scope."""
    db = open_database(url)
    store = MemoryStore(db, embedder, chunk_size=2000, chunk_overlap=0)
    folder = Path(tempfile.mkdtemp(prefix="crewline-bench-docs-"))
    for source, body in documents(texts):
        (folder / Path(source).name).write_text(body)
    start = time.perf_counter()
    report = await store.ingest(folder, scope="bench")  # what `crewline memory ingest DIR` does
    rate = len(texts) / (time.perf_counter() - start)
    shutil.rmtree(folder, ignore_errors=True)
    assert report.ok and report.chunks_added == len(texts), report
    db.close()
    return rate


def ingest_before_after(url: str, n: int, rev: str, runs: int, lancedb: bool) -> list[Row]:
    """Ingest rates of revision ``rev`` (a detached worktree under bench/.data), of this checkout and
    (with ``lancedb``) of LanceDB, taken in turns, each in a fresh process on a fresh database: one row
    per side, the median of runs."""
    from startup import checkout

    here = Path(__file__).resolve().parent
    trees = {rev: checkout(rev), "this": here.parent}
    sides = [*trees, "lancedb"] if lancedb else list(trees)
    rates: dict[str, list[float]] = {side: [] for side in sides}
    for _ in range(runs):
        for side in sides:
            tree = trees.get(side, here.parent)
            db_url, drop = (
                (f"lancedb:{tempfile.mkdtemp()}", None)
                if side == "lancedb"
                else pg_database(url)
                if url.startswith("postgres")
                else (f"sqlite:///{tempfile.mkdtemp()}/m.db", None)
            )
            env = {**os.environ, "PYTHONPATH": f"{tree}/src"}
            cmd = [sys.executable, str(here / "memory.py"), "--ingest-only", db_url, "--sizes", str(n)]
            try:
                out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
            finally:
                if drop is not None:
                    drop()
            rates[side].append(float(out.split()[-1]))
    name = url.split(":", 1)[0]
    return [
        Row(
            "lancedb" if side == "lancedb" else f"crewline@{side}",
            "embedded" if side == "lancedb" else name,
            n,
            statistics.median(r),
            0,
            0,
            0,
            f"ingest only, median of {runs}, in turns: "
            + _INGEST_NOTES["lancedb" if side == "lancedb" else "crewline"],
        )
        for side, r in rates.items()
    ]


_INGEST_NOTES = {
    "crewline": "files read, parsed, chunked, hashed, embedded, versioned writes + FTS index, committed",
    "lancedb": "texts embedded, rows added, FTS index built",
}


async def bench_crewline(
    url: str, texts: list[str], qs: list[str], embedder: LocalEmbedder, text_budgets: list[int | None]
) -> list[Row]:
    db = open_database(url)
    store = MemoryStore(db, embedder)
    ingest = float("nan")  # a reused corpus was not ingested in this run
    if await store.count_items() == 0:
        db.close()
        ingest = await ingest_rate(url, texts, embedder)
        db = open_database(url)
        store = MemoryStore(db, embedder)
        await store.remember("warm-up fact in another scope", scope="other")
    rows = [await _searches(db, embedder, url, len(texts), ingest, qs, budget) for budget in text_budgets]
    db.close()
    return rows


async def _searches(
    db: Database, embedder: LocalEmbedder, url: str, n: int, ingest: float, qs: list[str], budget: int | None
) -> Row:
    store = MemoryStore(db, embedder, text_budget=budget)
    start = time.perf_counter()
    await store.ready()  # starts the full-text warm-up in the background
    await asyncio.to_thread(store._text.warmed.wait)
    warm_s = time.perf_counter() - start
    for q in qs[:20]:
        await store.search(q, scope="bench", k=10)
    lat = []
    for q in qs:
        t = time.perf_counter()
        await store.search(q, scope="bench", k=10)
        lat.append(time.perf_counter() - t)
    found = [[h.id for h in await store.search(q, scope="bench", k=10, text_weight=0)] for q in qs]
    hybrid = [[h.id for h in await store.search(q, scope="bench", k=10)] for q in qs]
    rows = db.query(lambda c: c.all("SELECT rid, id, embedding FROM memory_items WHERE scope = 'bench'"))
    rids, ids = [r[0] for r in rows], {r[0]: r[1] for r in rows}
    mat = np.stack([from_blob(r[2]) for r in rows])
    qv = await store.embed(qs)
    exact_vec = [[(rids[i], 0.0) for i in np.argsort(-(mat @ v))[:50]] for v in qv]
    exact = [[ids[r] for r, _ in e[:10]] for e in exact_vec]
    # Exact hybrid: brute-force vectors fused with full text over every matching chunk (no postings budget).
    full_text = TextIndex(postings_budget=None)
    now = time.time()
    exact_hybrid = []
    for q, ev in zip(qs, exact_vec, strict=True):
        tv = db.query(lambda c, q=q: full_text.search(c, q, ["bench"], 50, now))
        exact_hybrid.append([ids[r] for r, _, _ in fuse([(1.0, ev), (1.0, tv)])[:10]])
    p50, p95 = percentiles(lat)
    text = "FTS5" if url.startswith("sqlite") else "tsvector"
    kept = f"term postings kept ({budget}, warm-up {warm_s:.1f} s)" if budget else "unpruned in the db"
    note = f"exact vector + {text}, {kept}"
    row = Row("crewline", url.split(":", 1)[0], n, ingest, p50, p95, recall_at(found, exact), note)
    row.hybrid_recall = recall_at(hybrid, exact_hybrid)
    row.rss_mb = rss_mb()
    return row


def rss_mb() -> float:
    """This process's resident memory now (the whole bench process: model, corpus, indexes)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


# -- LanceDB ---------------------------------------------------------------------------------------------


def lancedb_ingest(
    path: str, texts: list[str], embedder: LocalEmbedder, index: bool
) -> tuple[Any, Any, float]:
    """LanceDB's side of the ingest, timed like crewline's: embedding with the same embedder (a cold
    word cache), the rows written, and the full-text index its hybrid search needs (plus the vector
    index with ``index``); no parsing, chunking, versions or dedup. Returns (table, vectors, chunks/s)."""
    import lancedb
    import pyarrow as pa

    db = lancedb.connect(path)
    start = time.perf_counter()
    vecs = embedder.embed_sync(texts)
    schema = pa.schema(
        [("id", pa.int64()), ("text", pa.string()), ("vector", pa.list_(pa.float32(), embedder.dim))]
    )
    table = db.create_table("bench", schema=schema)
    for i in range(0, len(texts), 5000):
        table.add(
            [
                {"id": j, "text": texts[j], "vector": vecs[j].tolist()}
                for j in range(i, min(i + 5000, len(texts)))
            ]
        )
    table.create_fts_index("text")  # the deprecated spelling is the one every 0.x release accepts
    if index:
        table.create_index(metric="cosine", vector_column_name="vector", index_type="IVF_HNSW_SQ")
    return table, vecs, len(texts) / (time.perf_counter() - start)


def bench_lancedb(path: str, texts: list[str], qs: list[str], embedder: LocalEmbedder, index: bool) -> Row:
    table, vecs, ingest = lancedb_ingest(path, texts, embedder, index)

    def hybrid(q: str) -> list[Any]:
        v = embedder.embed_sync([q])[0]
        return table.search(query_type="hybrid").vector(v).text(q).limit(10).to_list()

    for q in qs[:20]:
        hybrid(q)
    lat = []
    for q in qs:
        t = time.perf_counter()
        hybrid(q)
        lat.append(time.perf_counter() - t)
    qv = embedder.embed_sync(qs)
    found = [[r["id"] for r in table.search(v).metric("cosine").limit(10).to_list()] for v in qv]
    norm = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
    exact = [list(np.argsort(-(norm @ (v / np.linalg.norm(v))))[:10]) for v in qv]
    p50, p95 = percentiles(lat)
    note = "IVF_HNSW_SQ + native FTS, RRF" if index else "flat (exact) + native FTS, RRF"
    return Row("lancedb", "embedded", len(texts), ingest, p50, p95, recall_at(found, exact), note)


# -- driver ----------------------------------------------------------------------------------------------


def fresh_embedder() -> LocalEmbedder:
    """The bundled model, loaded (once per process), with an empty word cache: each engine's ingest
    tokenizes the corpus's words itself instead of the second one finding them cached by the first."""
    embedder = LocalEmbedder()
    embedder.embed_sync(["warm up"])
    return embedder


def pg_database(base: str, keep: str | None = None) -> tuple[str, Callable[[], None]]:
    """A fresh database, dropped afterwards; with ``keep``, the database of that name, created if missing
    and kept for the next run."""
    import psycopg

    name = keep or f"bench_memory_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(base, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        if keep:
            return
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return f"{base.rpartition('/')[0]}/{name}", drop


def cached_corpus(n: int) -> tuple[Path, str]:
    """Where ``--reuse`` keeps the corpus of ``n`` chunks: a SQLite file under bench/.data and a PostgreSQL
    database named after this checkout (so checkouts sharing a server do not share corpora)."""
    here = Path(__file__).resolve().parent
    data = here / ".data"
    data.mkdir(exist_ok=True)
    tag = hashlib.sha256(str(here).encode()).hexdigest()[:8]
    return data / f"memory-{n}.db", f"bench_memory_{n}_{tag}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--db", default="sqlite,postgresql")
    ap.add_argument("--engines", default="crewline,lancedb")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument(
        "--text-budgets", default="4000000,exact", help="crewline text_budget values (exact = none kept)"
    )
    ap.add_argument("--flat-only", action="store_true", help="LanceDB's exact search only (no IVF_HNSW_SQ)")
    ap.add_argument(
        "--reuse",
        action="store_true",
        help="keep each size's crewline corpus (bench/.data, a PostgreSQL database) and reuse it next time; "
        "ingest is then not measured",
    )
    ap.add_argument(
        "--pgvector", metavar="URL", help="only pgvector's HNSW on this server (bench/memory_pgvector.py)"
    )
    ap.add_argument("--ef-search", default="100,400", help="hnsw.ef_search values with --pgvector")
    ap.add_argument("--before", help="also measure the ingest of this git revision, in turns with this one")
    ap.add_argument("--runs", type=int, default=3, help="ingest runs of each side with --before")
    ap.add_argument("--no-search", action="store_true", help="with --before: the ingest turns only")
    ap.add_argument("--ingest-only", metavar="URL", help=argparse.SUPPRESS)  # one side of --before
    args = ap.parse_args()
    if args.pgvector:
        from memory_pgvector import run

        efs = [int(e) for e in args.ef_search.split(",")]
        run(args.pgvector, [int(s) for s in args.sizes.split(",")], args.queries, efs)
        return
    if args.ingest_only:
        texts, embedder = corpus(int(args.sizes)), fresh_embedder()
        if args.ingest_only.startswith("lancedb:"):
            print(lancedb_ingest(args.ingest_only.split(":", 1)[1], texts, embedder, False)[2])
        else:
            print(asyncio.run(ingest_rate(args.ingest_only, texts, embedder)))
        return
    budgets = [None if b == "exact" else int(b) for b in args.text_budgets.split(",")]
    sizes = [int(s) for s in args.sizes.split(",")]
    dbs, engines = args.db.split(","), args.engines.split(",")
    pg = os.environ.get("CREWLINE_BENCH_PG_URL") or os.environ.get("CREWLINE_TEST_PG_URL")
    rows: list[Row] = []
    for n in sizes:
        texts = corpus(n)
        qs = queries(texts, args.queries)
        tmp = tempfile.mkdtemp(prefix="crewline-bench-memory-")
        cached_file, cached_pg = cached_corpus(n)
        try:
            search = "crewline" in engines and not args.no_search
            if search and "sqlite" in dbs:
                path = cached_file if args.reuse else f"{tmp}/m.db"
                rows += asyncio.run(bench_crewline(f"sqlite:///{path}", texts, qs, fresh_embedder(), budgets))
                print(rows[-1], file=sys.stderr)
            if search and "postgresql" in dbs:
                if pg:
                    url, drop = pg_database(pg, cached_pg if args.reuse else None)
                    try:
                        rows += asyncio.run(bench_crewline(url, texts, qs, fresh_embedder(), budgets))
                    finally:
                        drop()
                    print(rows[-1], file=sys.stderr)
                else:
                    print(
                        "skipping PostgreSQL: set CREWLINE_BENCH_PG_URL or run scripts/pg start",
                        file=sys.stderr,
                    )
            for db in dbs if args.before else []:
                url = f"sqlite:///{tmp}/m.db" if db == "sqlite" else pg
                if url:
                    # LanceDB's ingest goes in the turns of the first database only.
                    with_lance = "lancedb" in engines and db == dbs[0]
                    rows += ingest_before_after(url, n, args.before, args.runs, with_lance)
                    print(*rows[-3:], sep="\n", file=sys.stderr)
            if "lancedb" in engines and not args.no_search:
                for index in (False, True) if n >= 50_000 and not args.flat_only else (False,):
                    rows.append(bench_lancedb(f"{tmp}/lance-{index}", texts, qs, fresh_embedder(), index))
                    print(rows[-1], file=sys.stderr)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    print_table(rows, args.queries)


def print_table(rows: list[Row], nq: int) -> None:
    print(f"\nmemory bench: {os.cpu_count()} cores, Model2Vec 64-d embeddings, {nq} hybrid queries, k=10")
    print(
        "vec R@10: vector side vs brute force; hyb R@10: hybrid top-10 vs exact vectors + unpruned full text"
    )
    print(
        "RSS: the bench process's resident memory after crewline's searches (a reused corpus: ingest not timed)"
    )
    head = (
        f"{'engine':<9} {'db':<11} {'chunks':>7} {'ingest/s':>9} {'p50 ms':>7} {'p95 ms':>7} {'vec R@10':>8} "
        f"{'hyb R@10':>8} {'RSS MB':>7}  notes"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r.engine:<9} {r.db:<11} {r.n:>7} {r.ingest_per_s:>9.0f} {r.p50_ms:>7.2f} {r.p95_ms:>7.2f} "
            f"{r.recall:>8.3f} {'-' if r.hybrid_recall is None else f'{r.hybrid_recall:.3f}':>8} "
            f"{'-' if r.rss_mb is None else f'{r.rss_mb:.0f}':>7}  {r.note}"
        )


if __name__ == "__main__":
    main()
