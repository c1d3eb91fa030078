"""Embedders: the local model, a gateway adapter with a fake, and detecting a change of model."""

from __future__ import annotations

import numpy as np
import pytest

from crewline.errors import ConfigError, InvalidInput
from crewline.memory import GatewayEmbedder, LocalEmbedder, MemoryStore, embedder_from_config
from crewline.store import Database

from .conftest import run
from .fakes import HashEmbedder


def test_local_embedder_is_offline_and_normalisable(embedder: LocalEmbedder) -> None:
    vecs = run(embedder.embed(["hello world", "Prefers email over calls"]))
    assert vecs.shape == (2, embedder.dim) and vecs.dtype == np.float32
    assert embedder.name.startswith("model2vec:")


def test_gateway_embedder_batches_and_checks_dimensions() -> None:
    batches: list[list[str]] = []

    async def fake(texts: list[str]) -> list[list[float]]:
        batches.append(texts)
        return [[float(len(t)), 1.0, 0.0] for t in texts]

    emb = GatewayEmbedder(fake, name="openai/text-embedding-3-small", dim=3, batch_size=2)
    out = run(emb.embed(["a", "bb", "ccc"]))
    assert [len(b) for b in batches] == [2, 1] and out.shape == (3, 3)
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0)

    async def wrong(texts: list[str]) -> list[list[float]]:
        return [[1.0, 2.0] for _ in texts]

    with pytest.raises(InvalidInput, match="openai/x output has dimension 2, the memory index expects 3"):
        run(GatewayEmbedder(wrong, name="openai/x", dim=3).embed(["a"]))

    async def short(texts: list[str]) -> list[list[float]]:
        return [[1.0, 2.0, 3.0]]

    with pytest.raises(InvalidInput, match="expected 2 vectors"):
        run(GatewayEmbedder(short, name="openai/x", dim=3).embed(["a", "b"]))


def test_embedder_from_config() -> None:
    assert isinstance(embedder_from_config({}), LocalEmbedder)
    with pytest.raises(ConfigError, match="dim"):
        embedder_from_config({"embedder": "openai/text-embedding-3-small"})
    with pytest.raises(ConfigError, match="gateway"):
        embedder_from_config({"embedder": "openai/text-embedding-3-small", "dim": 1536})

    async def fake(texts: list[str]) -> list[list[float]]:
        return [[1.0] * 8 for _ in texts]

    emb = embedder_from_config({"embedder": "openai/e", "dim": 8}, gateway_embed=fake)
    assert (emb.name, emb.dim) == ("openai/e", 8)


def test_changing_the_model_is_detected_and_reembed_fixes_it(db: Database) -> None:
    first = MemoryStore(db, HashEmbedder(dim=16, name="test:a"))
    run(first.remember("Prefers email over calls", scope="c:1"))
    run(
        first.ingest_text(
            "# Doc\nRefunds take fourteen days.", source="d.md", scope="kb", mime="text/markdown"
        )
    )
    second = MemoryStore(db, HashEmbedder(dim=24, name="test:b"))
    with pytest.raises(ConfigError, match=r"built with embedder test:a \(dim 16\).*reembed"):
        run(second.search("email", scope="c:1"))
    progress: list[int] = []
    assert run(second.reembed(progress=progress.append)) == 2 and sum(progress) == 2
    assert run(second.reembed()) == 0  # resumable: nothing left to do
    hits = run(second.search("refunds fourteen days", scope="kb", k=1, text_weight=0))
    assert hits and hits[0].vector_score is not None and hits[0].vector_score > 0.7  # heading is embedded too
    stats = run(second.stats())
    assert (stats.embedder, stats.dim) == ("test:b", 24)


def test_local_embedder_gives_the_models_own_vectors(embedder: LocalEmbedder) -> None:
    # The word cache must give exactly what the model computes itself, for plain and awkward texts alike
    # (non-ASCII and control characters take the tokenizer's path, empty texts give zero vectors).
    texts = [
        "Prefers email over calls",
        "Invoice   INV-2041\tis overdue;\r\nthe customer (ACME) asked twice!",
        "naïve café résumé",
        "tabs\x0cand\x0bfeeds, unit\x1cseparators",
        "",
        "   ",
        "word " * 2000,
        "Prefers email over calls",
        "a link https://example.com/" + "x" * 200 + " in the middle",  # a word too long for the hash
        "\n\t  padded \r\n",
    ]
    model = embedder._load()
    expected = np.asarray(model.encode(texts, show_progress_bar=False), dtype=np.float32)
    for _ in range(2):  # cold cache, then warm
        got = embedder.embed_sync(texts)
        assert got.shape == expected.shape and np.allclose(got, expected, atol=1e-5)


def test_local_embedder_matches_the_model_on_a_corpus_across_cache_clears(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Thousands of distinct words, texts near the model's length limit and unknown tokens, with a
    # cache small enough to be cleared mid-batch: every vector within 1e-5 of the model's own.
    from crewline.memory import embedders

    monkeypatch.setattr(embedders, "_CACHED_WORDS", 500)
    embedder = LocalEmbedder()
    model = embedder._load()
    rng = np.random.default_rng(7)
    vocab = [w for w in model.tokenizer.get_vocab() if w.isascii() and w.isprintable() and " " not in w]
    vocab += ["qzxv\u2581", "<unk>", "zzzzzzzzzzzzzzzzzz", "1234567", "co-operate", "e.g.", "(x)"]
    texts = [" ".join(rng.choice(vocab, size=int(rng.integers(1, 120)))) for _ in range(600)]
    texts += [" ".join(rng.choice(vocab, size=600)), "unknown\x7f", "a\tb\nc"]
    expected = np.asarray(model.encode(texts, show_progress_bar=False), dtype=np.float32)
    for _ in range(2):
        got = embedder.embed_sync(texts)
        assert got.shape == expected.shape
        assert float(np.abs(got - expected).max()) <= 1e-5


def test_word_table_finds_every_word_it_was_given_and_no_other() -> None:
    # Enough words to make the table grow several times, put in batches, each batch looked up with
    # words it has never seen: every known word finds its own row, every unknown one -1.
    from crewline.memory.wordtable import WordHasher, WordTable

    hasher, table = WordHasher(), WordTable()
    words = [f"w{i}x" for i in range(30_000)]
    for first in range(0, len(words), 7_000):
        batch = words[first : first + 7_000]
        hashes, _, _ = hasher.words(" ".join(batch).encode())
        table.put(hashes, np.arange(first, first + len(batch)))
    assert len(table) == len(words)
    probe = words[::3] + [f"v{i}x" for i in range(5_000)] + ["w1x", "w1", "1x", "xw1x"]
    data = ("\t" + "\n ".join(probe) + "\r").encode()
    hashes, starts, ends = hasher.words(data)
    assert [data[s:e].decode() for s, e in zip(starts.tolist(), ends.tolist(), strict=True)] == probe
    assert len(set(hashes.tolist())) == len(probe)
    expected = list(range(0, len(words), 3)) + [-1] * 5_000 + [1, -1, -1, -1]
    assert table.get(hashes).tolist() == expected
