"""Parsing RFC 5322 email into records.Message: text from HTML, attachments as blobs, strict refusals."""

from __future__ import annotations

import base64
import hashlib

import pytest

from crewline import InvalidInput
from crewline.connectors.email_message import html_to_text, parse_email

HEAD = "From: Grace Hopper <grace@example.com>\r\nTo: ada@example.com, b@example.com\r\nCc: c@example.com\r\n"


def parse(raw: str | bytes, limit: int = 1000) -> tuple[object, dict[str, bytes]]:
    kept: dict[str, bytes] = {}

    def keep(data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        kept[digest] = data
        return digest

    data = raw.encode() if isinstance(raw, str) else raw
    return parse_email(data, keep=keep, max_attachment_bytes=limit, source="mail"), kept


def test_a_multipart_email_becomes_a_message_with_attachments_as_blobs() -> None:
    pdf = b"%PDF-1.4 invoice"
    raw = (
        HEAD + "Subject: =?utf-8?q?Caf=C3=A9_invoice?=\r\nMessage-ID: <m1@example.com>\r\n"
        "In-Reply-To: <m0@example.com>\r\nReferences: <a@x> <m0@example.com>\r\nList-Id: <news.example.com>\r\n"
        'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
        "<html><head><style>p{}</style></head><body><p>Hello&nbsp;<b>Ada</b></p><p>Total: 5 &euro;</p>"
        "<script>alert(1)</script></body></html>\r\n"
        '--b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename="inv.pdf"\r\n'
        "Content-Transfer-Encoding: base64\r\n\r\n" + base64.b64encode(pdf).decode() + "\r\n--b--\r\n"
    )
    msg, kept = parse(raw)
    assert msg.subject == "Café invoice"  # type: ignore[attr-defined]
    assert msg.sender == "grace@example.com" and msg.to == ["ada@example.com", "b@example.com"]  # type: ignore[attr-defined]
    assert msg.cc == ["c@example.com"] and msg.message_id == "<m1@example.com>"  # type: ignore[attr-defined]
    assert msg.in_reply_to == "<m0@example.com>" and msg.references == ["<a@x>", "<m0@example.com>"]  # type: ignore[attr-defined]
    assert msg.text == "Hello\xa0Ada\n\nTotal: 5 €"  # type: ignore[attr-defined]
    assert msg.headers == {"List-Id": "<news.example.com>"}  # type: ignore[attr-defined]
    [att] = msg.attachments  # type: ignore[attr-defined]
    assert (att.filename, att.content_type, att.size) == ("inv.pdf", "application/pdf", len(pdf))
    assert kept == {att.blob: pdf}


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (HEAD + "Subject: x\r\nContent-Type: text/plain; charset=x-nope\r\n\r\nhi\r\n", "unknown charset"),
        (
            HEAD.encode() + b"Subject: x\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\xff\xfe\r\n",
            "not valid utf-8",
        ),
        (HEAD + "Subject: =?utf-8?q?hi=0D=0ABcc:_x@evil.example?=\r\n\r\nhi\r\n", "header injection"),
        (
            HEAD + "Subject: x\r\nContent-Type: application/zip\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            "!!!not*base64\r\n",
            "base64",
        ),
    ],
)
def test_an_email_that_cannot_be_used_says_why(raw: str | bytes, reason: str) -> None:
    with pytest.raises(InvalidInput, match=reason):
        parse(raw)


def test_an_attachment_over_the_limit_is_refused_naming_it() -> None:
    raw = (
        HEAD + 'Subject: x\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
        'Content-Type: application/octet-stream\r\nContent-Disposition: attachment; filename="big.bin"\r\n\r\n'
        + "x" * 50
        + "\r\n--b--\r\n"
    )
    with pytest.raises(InvalidInput, match=r"big\.bin is 50 bytes, over the limit of 10"):
        parse(raw, limit=10)


def test_undeclared_8bit_utf8_text_is_read() -> None:
    msg, _ = parse((HEAD + "Subject: x\r\n\r\n").encode() + "Grüße\r\n".encode())
    assert msg.text == "Grüße"  # type: ignore[attr-defined]


def test_html_to_text_keeps_blocks_as_lines() -> None:
    assert html_to_text("<div>a</div><div>b<br>c</div><ul><li>d</li></ul>") == "a\n\nb\nc\n\nd"
