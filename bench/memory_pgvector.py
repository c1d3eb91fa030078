"""Memory search on PostgreSQL with pgvector's HNSW index, at 100k and 1,000,000 chunks.

The corpus (bench/memory.py's synthetic chunks) and its Model2Vec embeddings are made once per size and
cached under bench/.data; the database is kept between runs too (``bench_pgvector_<n>``), so the
million-chunk corpus is built once. Items are bulk-loaded into ``memory_items`` (COPY, not the ingest
pipeline: bench/memory.py measures that), then a store with ``vector_index = "hnsw"`` fills
``memory_vectors`` from them and builds the HNSW index in one go (the path an existing database takes
when pgvector arrives). Then it times ``MemoryStore.search`` (hybrid, k=10) and reports p50/p95,
recall@10 of the vector side against brute force over the same vectors, for each ``hnsw.ef_search``
given, with build times and this process's peak RSS. Nothing is asserted.

    bench/memory_pgvector.py --pgvector postgresql://crewline@127.0.0.1:PORT/postgres --sizes 100000
    bench/memory.py --pgvector URL ...                   # the same, from the memory bench
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import resource
import sys
import time
from pathlib import Path

import numpy as np

from crewline.memory import LocalEmbedder, MemoryStore
from crewline.memory.ann import VectorSettings
from crewline.memory.vectors import to_blob
from crewline.store import Database, open_database

sys.path.insert(0, str(Path(__file__).parent))
from memory import percentiles, queries, recall_at, vocabulary

DATA = Path(__file__).parent / ".data"


def corpus(n: int, seed: int = 1) -> list[str]:
    """bench/memory.py's corpus (40-90 words a chunk, Zipf-like skew), drawn in one go: a million
    chunks in seconds instead of a quarter of an hour."""
    words = np.array(vocabulary())
    rng = np.random.default_rng(seed)
    ranks = np.arange(1, len(words) + 1)
    p = (1 / ranks**0.9) / (1 / ranks**0.9).sum()
    words = words[rng.permutation(len(words))]
    lengths = rng.integers(40, 90, size=n)
    drawn = words[rng.choice(len(words), size=int(lengths.sum()), p=p)]
    ends = np.cumsum(lengths)
    return [" ".join(drawn[e - k : e]).capitalize() + "." for e, k in zip(ends, lengths, strict=True)]


def cached_corpus(n: int, embedder: LocalEmbedder) -> tuple[list[str], np.ndarray]:
    DATA.mkdir(exist_ok=True)
    texts_file, vecs_file = DATA / f"corpus-{n}.txt", DATA / f"corpus-{n}.npy"
    if texts_file.exists() and vecs_file.exists():
        return texts_file.read_text().split("\n"), np.load(vecs_file)
    texts = corpus(n)
    print(f"embedding {n} chunks (cached in {DATA.name}/ for the next run)", file=sys.stderr, flush=True)
    vecs = np.concatenate([embedder.embed_sync(texts[i : i + 10_000]) for i in range(0, n, 10_000)])
    texts_file.write_text("\n".join(texts))
    np.save(vecs_file, vecs.astype(np.float32))
    return texts, vecs


def database_for(base: str, n: int) -> tuple[str, bool]:
    """The kept database for size ``n`` and whether it already holds the corpus."""
    import psycopg

    name = f"bench_pgvector_{n}"
    url = f"{base.rpartition('/')[0]}/{name}"
    with psycopg.connect(base, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
            conn.execute(f'CREATE DATABASE "{name}"')
            return url, False
    with psycopg.connect(url) as conn:
        if conn.execute("SELECT to_regclass('memory_items')").fetchone() == (None,):
            return url, False
        row = conn.execute("SELECT COUNT(*) FROM memory_items").fetchone()
        return url, bool(row and row[0] == n)


def bulk_load(url: str, texts: list[str], vecs: np.ndarray) -> float:
    """COPY the items in (schema first, by opening the database); seconds taken."""
    import psycopg

    open_database(url).close()
    start = time.perf_counter()
    now = time.time()
    with psycopg.connect(url) as conn:
        conn.execute("SET synchronous_commit = off")
        cols = "id, scope, kind, text, content_hash, metadata, embedding, embed_model, version, author, "
        cols += "created_at, updated_at"
        with conn.cursor().copy(f"COPY memory_items ({cols}) FROM STDIN") as copy:
            for i, (text, vec) in enumerate(zip(texts, vecs, strict=True)):
                digest = hashlib.sha256(text.encode()).hexdigest()
                row = (f"b{i}", "bench", "chunk", text, digest, "{}", to_blob(vec), "local", 1, "bench")
                copy.write_row((*row, now, now))
    return time.perf_counter() - start


async def measure(url: str, texts: list[str], vecs: np.ndarray, nq: int, ef: int) -> dict[str, float]:
    """Figures for one ``hnsw.ef_search``: the index is built by the first call (``build_s``)."""
    embedder = LocalEmbedder()
    db: Database = open_database(url)
    store = MemoryStore(db, embedder, vectors=VectorSettings("hnsw", ef))
    start = time.perf_counter()
    await store.ready()  # fills memory_vectors and builds the index when it is not there yet
    out = {"build_s": time.perf_counter() - start}
    qs = queries(texts, nq)
    for q in qs[:20]:
        await store.search(q, scope="bench", k=10)
    for name, weight in (("hybrid", 1.0), ("vector", 0.0)):
        lat = []
        for q in qs:
            t = time.perf_counter()
            await store.search(q, scope="bench", k=10, text_weight=weight)
            lat.append(time.perf_counter() - t)
        out[f"{name}_p50"], out[f"{name}_p95"] = percentiles(lat)
    found = [[h.id for h in await store.search(q, scope="bench", k=10, text_weight=0)] for q in qs]
    qv = embedder.embed_sync(qs)
    exact = [[f"b{i}" for i in np.argsort(-(vecs @ v))[:10]] for v in qv]
    out["recall"] = recall_at(found, exact)
    db.close()
    out["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


async def footprint(url: str, n: int, mode: str) -> None:
    """Peak RSS of this (fresh) process opening the kept database of ``n`` chunks and searching it."""
    db_url, _ = database_for(url, n)
    db = open_database(db_url)
    store = MemoryStore(db, LocalEmbedder(), vectors=VectorSettings(mode))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    await store.search("router invoice refund", scope="bench", k=10, text_weight=0)
    first = time.perf_counter() - start
    for q in ["alpha beta", "norway shipping days", "premium support plan"] * 10:
        await store.search(q, scope="bench", k=10, text_weight=0)
    db.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"{mode} {n} chunks: peak RSS {peak:.0f} MB ({before:.0f} MB before the first search), first search {first:.1f} s"
    )


def run(url: str, sizes: list[int], nq: int, efs: list[int]) -> None:
    embedder = LocalEmbedder()
    for n in sizes:
        texts, vecs = cached_corpus(n, embedder)
        db_url, ready = database_for(url, n)
        load = 0.0 if ready else bulk_load(db_url, texts, vecs)
        for ef in efs:
            r = asyncio.run(measure(db_url, texts, vecs, nq, ef))
            print(
                f"pgvector hnsw {n:>8} chunks, ef_search {ef:>4}: load {load:6.1f} s, "
                f"fill+index {r['build_s']:6.1f} s, hybrid (default text budget) p50 {r['hybrid_p50']:.2f} "
                f"p95 {r['hybrid_p95']:.2f} ms, vector only p50 {r['vector_p50']:.2f} p95 "
                f"{r['vector_p95']:.2f} ms, vec R@10 {r['recall']:.3f}, peak RSS {r['rss_mb']:.0f} MB",
                flush=True,
            )
            load = 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pgvector", required=True, help="a PostgreSQL URL whose server has pgvector")
    ap.add_argument("--sizes", default="100000")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--ef-search", default="100,400", help="hnsw.ef_search values to measure")
    ap.add_argument(
        "--footprint", choices=("hnsw", "exact"), help="only the RSS of searching a kept database"
    )
    args = ap.parse_args()
    if args.footprint:
        for n in (int(s) for s in args.sizes.split(",")):
            asyncio.run(footprint(args.pgvector, n, args.footprint))
        return
    efs = [int(e) for e in args.ef_search.split(",")]
    run(args.pgvector, [int(s) for s in args.sizes.split(",")], args.queries, efs)


if __name__ == "__main__":
    main()
