"""Reading and chunking text, Markdown, HTML and PDF files; bad files fail naming the file."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import pytest

from crewline.errors import InvalidInput
from crewline.memory.chunking import chunk_document
from crewline.memory.documents import parse_file, parse_text

from ._pdf import make_pdf


def test_markdown_sections_carry_heading_paths_and_offsets() -> None:
    md = "# Guide\nintro\n\n## Install\nrun it\n\n```\n# not a heading\n```\n\n### Linux\napt\n\n## Use\nuse it\n"
    doc = parse_text("g.md", md, "text/markdown")
    assert doc.title == "Guide"
    assert [s.heading for s in doc.sections] == [
        "Guide",
        "Guide > Install",
        "Guide > Install > Linux",
        "Guide > Use",
    ]
    assert "# not a heading" in doc.sections[1].text
    for s in doc.sections:
        assert doc.text[s.start : s.start + len(s.text)] == s.text


def test_many_sections_join_into_one_text_their_offsets_index() -> None:
    # Thousands of sections (the text is joined once, not grown a section at a time): every offset still
    # indexes the text, which is the sections joined by blank lines, and a copy without its sections
    # (what an ingest keeps) keeps the text.
    md = "# Book\n\n" + "\n\n".join(f"## Part {i}\n{'word ' * (i % 7 + 1)}\n\n\n" for i in range(3000))
    doc = parse_text("b.md", md, "text/markdown")
    assert len(doc.sections) == 3000 and doc.sections[-1].heading == "Book > Part 2999"
    assert doc.text == "\n\n".join(s.text for s in doc.sections)
    assert all(doc.text[s.start : s.start + len(s.text)] == s.text for s in doc.sections)
    kept = dataclasses.replace(doc, sections=[])
    assert kept.text == doc.text and kept.sections == []
    html = "".join(f"<h2>H{i}</h2><p>para {i}</p>" for i in range(500))
    page = parse_text("p.html", html, "text/html")
    assert [s.heading for s in page.sections][-1] == "H499"
    assert all(page.text[s.start : s.start + len(s.text)] == s.text for s in page.sections)


def test_html_drops_scripts_and_keeps_headings() -> None:
    html = (
        "<html><head><title>Help</title><style>p{}</style></head><body><h1>Billing</h1><p>Pay by <b>card</b>.</p>"
        "<script>evil()</script><h2>Refunds</h2><ul><li>within 30 days</li><li>original method</li></ul></body></html>"
    )
    doc = parse_text("h.html", html, "text/html")
    assert doc.title == "Help"
    assert [(s.heading, s.text) for s in doc.sections] == [
        ("Billing", "Pay by card."),
        ("Billing > Refunds", "within 30 days\n\noriginal method"),
    ]


def test_pdf_pages_become_sections(tmp_path: Path) -> None:
    path = tmp_path / "manual.pdf"
    path.write_bytes(make_pdf(["Warranty lasts two years.", "Returns need the receipt."]))
    doc = parse_file(path)
    assert [s.heading for s in doc.sections] == ["page 1", "page 2"]
    assert "Warranty lasts two years." in doc.sections[0].text


def test_long_sections_are_cut_with_overlap_on_boundaries() -> None:
    body = " ".join(f"Sentence number {i} is here." for i in range(300))
    doc = parse_text("t.md", "# T\n" + body, "text/markdown")
    chunks = chunk_document(doc, size=500, overlap=100)
    assert len(chunks) > 10
    assert all(len(c.text) <= 500 for c in chunks)
    assert all(c.heading == "T" for c in chunks)
    assert [c.position for c in chunks] == list(range(len(chunks)))
    for a, b in itertools.pairwise(chunks):
        assert b.char_start < a.char_end  # overlapping
        assert doc.text[b.char_start : b.char_end] == b.text
        assert a.text.endswith(".")  # cut at a sentence boundary


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.txt", b"", "empty"),
        ("blank.md", b"   \n\n  ", "no text"),
        ("bin.txt", b"abc\x00\x01\x02def", "binary"),
        ("latin.txt", "caf\xe9".encode("latin-1"), "UTF-8"),
        ("image.png", b"\x89PNG....", "unsupported file type"),
        ("bad.pdf", b"%PDF-1.4 garbage", "PDF"),
    ],
)
def test_bad_files_fail_naming_the_file(tmp_path: Path, name: str, content: bytes, message: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InvalidInput, match=message) as info:
        parse_file(path)
    assert name in str(info.value)


def test_huge_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "big.txt"
    path.write_bytes(b"word " * 1000)
    with pytest.raises(InvalidInput, match=r"big\.txt.*limit"):
        parse_file(path, max_bytes=1000)


def test_bad_chunk_settings() -> None:
    doc = parse_text("t.txt", "hello")
    with pytest.raises(InvalidInput, match="chunk size"):
        chunk_document(doc, size=10)
    with pytest.raises(InvalidInput, match="overlap"):
        chunk_document(doc, size=200, overlap=150)
