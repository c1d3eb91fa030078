"""Reading documents: text, Markdown, HTML and PDF files into titled sections.

Every reader returns the same shape, a :class:`ParsedDocument` whose sections carry their heading path
("Guide > Install > Linux") and their character offset in the document's normalised text, so each chunk
can say where it came from. Bad files fail here, before anything is written, with the path in the error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import NamedTuple

from ..errors import InvalidInput

__all__ = ["MAX_FILE_BYTES", "SUPPORTED", "ParsedDocument", "Section", "parse_file", "parse_text"]

MAX_FILE_BYTES = 50 * 1024 * 1024
SUPPORTED = {
    ".txt": "text/plain",
    ".text": "text/plain",
    ".md": "text/markdown",
    ".markdown": "text/markdown",
    ".html": "text/html",
    ".htm": "text/html",
    ".pdf": "application/pdf",
}


class Section(NamedTuple):
    """A run of text under one heading path. (A named tuple of plain values: the cyclic garbage
    collector stops tracking it, so a large ingest's sections do not make it scan more.)"""

    heading: str | None  # the heading path, outermost first, joined with " > "
    text: str
    start: int  # offset of ``text`` in ParsedDocument.text


@dataclass
class ParsedDocument:
    source: str
    mime: str
    title: str | None
    text: str = ""  # the sections joined by blank lines, once :meth:`done` (every reader here calls it)
    sections: list[Section] = field(default_factory=list)
    _pieces: list[str] = field(init=False, repr=False, compare=False)
    _size: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._pieces = [self.text] if self.text else []
        self._size = len(self.text)

    def add(self, heading: str | None, body: str) -> None:
        """Append a section; ``text`` holds it once :meth:`done` is called. (Appending to one string
        copied the whole text each time: a 13 MB Markdown file of 32,000 sections took 20 s to parse.)"""
        body = body.strip()
        if not body:
            return
        if self._pieces:
            self._size += 2  # the blank line between sections
        self.sections.append(Section(heading, body, self._size))
        self._pieces.append(body)
        self._size += len(body)

    def done(self) -> ParsedDocument:
        """The document with ``text`` joined from the sections added so far."""
        self.text = "\n\n".join(self._pieces)
        self._pieces = [self.text] if self.text else []
        return self


def parse_file(path: Path, *, max_bytes: int = MAX_FILE_BYTES) -> ParsedDocument:
    """Read and parse one file; :class:`InvalidInput` naming the file when it cannot be used."""
    mime = SUPPORTED.get(path.suffix.lower())
    if mime is None:
        kinds = ", ".join(sorted(SUPPORTED))
        raise InvalidInput(f"{path}: unsupported file type {path.suffix or '(none)'!r}; supported: {kinds}")
    try:
        size = path.stat().st_size
    except OSError as e:
        raise InvalidInput(f"{path}: cannot read: {e.strerror or e}") from None
    if size == 0:
        raise InvalidInput(f"{path}: the file is empty")
    if size > max_bytes:
        raise InvalidInput(f"{path}: {size} bytes is over the {max_bytes}-byte limit for one document")
    data = path.read_bytes()
    if mime == "application/pdf":
        doc = _parse_pdf(str(path), data)
    else:
        doc = parse_text(str(path), _decode(str(path), data), mime)
    if not doc.text.strip():
        raise InvalidInput(f"{path}: no text found in the document")
    return doc


def parse_text(source: str, text: str, mime: str = "text/plain") -> ParsedDocument:
    if mime == "text/html":
        return _parse_html(source, text)
    if mime == "text/markdown":
        return _parse_markdown(source, text)
    doc = ParsedDocument(source, mime, None)
    doc.add(None, _normalise(text))
    return doc.done()


def _decode(source: str, data: bytes) -> str:
    if b"\x00" in data[:8192]:
        raise InvalidInput(f"{source}: looks binary (contains NUL bytes), not a text document")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise InvalidInput(
            f"{source}: not valid UTF-8 (byte {e.start}): convert it to UTF-8 (e.g. iconv -t UTF-8) first"
        ) from None


def _normalise(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    # Trailing blanks off every line, and runs of blank lines down to one: string methods and a
    # substring test, several times faster than the equivalent regular expressions over a whole file.
    text = "\n".join([line.rstrip(" \t\f\v") for line in text.split("\n")])
    if "\n\n\n" in text:
        text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


_ATX = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$")
_FENCES = ("```", "~~~")


def _parse_markdown(source: str, text: str) -> ParsedDocument:
    doc = ParsedDocument(source, "text/markdown", None)
    path: list[tuple[int, str]] = []
    body: list[str] = []
    in_fence = False
    for line in _normalise(text).split("\n"):
        # The prefix tests skip the regular expressions for the lines (nearly all) they cannot match.
        if line.lstrip()[:3] in _FENCES:
            in_fence = not in_fence
        m = None if in_fence or line[:1] != "#" else _ATX.match(line)
        if m is None:
            body.append(line)
            continue
        doc.add(_joined(path), "\n".join(body))
        body = []
        level, title = len(m.group(1)), m.group(2).strip()
        path = [(lv, t) for lv, t in path if lv < level] + [(level, title)]
        if doc.title is None and level == 1:
            doc.title = title
    doc.add(_joined(path), "\n".join(body))
    return doc.done()


def _joined(path: list[tuple[int, str]]) -> str | None:
    return " > ".join(t for _, t in path) or None


class _HtmlToSections(HTMLParser):
    _SKIP = frozenset({"script", "style", "noscript", "template", "svg", "head"})
    _BLOCK = frozenset(
        {"p", "div", "br", "li", "tr", "section", "article", "table", "ul", "ol", "pre", "blockquote", "hr"}
    )
    _HEADINGS = {f"h{i}": i for i in range(1, 7)}

    def __init__(self, doc: ParsedDocument) -> None:
        super().__init__(convert_charrefs=True)
        self.doc = doc
        self.path: list[tuple[int, str]] = []
        self.body: list[str] = []
        self.heading: list[str] | None = None
        self.heading_level = 0
        self.skip = 0
        self.in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self.skip += 1
        elif tag == "title":
            self.in_title = True
        elif tag in self._HEADINGS:
            self.heading, self.heading_level = [], self._HEADINGS[tag]
        elif tag in self._BLOCK:
            self.body.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP:
            self.skip = max(0, self.skip - 1)
        elif tag == "title":
            self.in_title = False
        elif tag in self._HEADINGS and self.heading is not None:
            title = " ".join("".join(self.heading).split())
            self.heading = None
            if title:
                self.flush()
                self.path = [(lv, t) for lv, t in self.path if lv < self.heading_level]
                self.path.append((self.heading_level, title))
                if self.doc.title is None and self.heading_level == 1:
                    self.doc.title = title
        elif tag in self._BLOCK:
            self.body.append("\n")

    def handle_data(self, data: str) -> None:
        if self.in_title and self.doc.title is None and data.strip():
            self.doc.title = data.strip()
        if self.skip or self.in_title:
            return
        if self.heading is not None:
            self.heading.append(data)
        else:
            self.body.append(data)

    def flush(self) -> None:
        lines = (" ".join(line.split()) for line in "".join(self.body).split("\n"))
        self.doc.add(_joined(self.path), re.sub(r"\n{3,}", "\n\n", "\n".join(lines)))
        self.body = []


def _parse_html(source: str, text: str) -> ParsedDocument:
    doc = ParsedDocument(source, "text/html", None)
    parser = _HtmlToSections(doc)
    parser.feed(text)
    parser.close()
    parser.flush()
    return doc.done()


def _parse_pdf(source: str, data: bytes) -> ParsedDocument:
    try:
        from pypdf import PdfReader
        from pypdf.errors import PdfReadError
    except ImportError as e:  # pragma: no cover - depends on the install
        raise InvalidInput(f"{source}: reading PDF needs pypdf: pip install pypdf") from e
    import io
    import logging

    logging.getLogger("pypdf").setLevel(logging.ERROR)
    doc = ParsedDocument(source, "application/pdf", None)
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise InvalidInput(f"{source}: the PDF is encrypted; decrypt it first")
        meta_title = reader.metadata.title if reader.metadata else None
        doc.title = str(meta_title) if meta_title else None
        for number, page in enumerate(reader.pages, start=1):
            doc.add(f"page {number}", _normalise(page.extract_text() or ""))
        doc.done()
    except InvalidInput:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, OSError) as e:
        raise InvalidInput(f"{source}: not a readable PDF: {e}") from None
    if not doc.text:
        raise InvalidInput(f"{source}: the PDF has no extractable text (scanned pages need OCR first)")
    return doc
