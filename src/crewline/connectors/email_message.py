"""RFC 5322 email into :class:`~crewline.connectors.records.Message`, and the header checks both ways.

Parsing is strict where leniency would mislead a workflow: a charset Python does not know, text that is
not valid in its declared charset, a damaged base64 part, a header whose decoded value holds a line
break (an injection attempt: ``Subject: =?utf-8?q?hi=0D=0ABcc:...?=``) or an attachment over the size
limit make :func:`parse_email` raise :class:`~crewline.errors.InvalidInput` with the reason, which the
inbox trigger records before skipping the email. HTML-only mail gets a plain-text rendering, so a
prompt never sees markup; attachments go to the content-addressed blobs through ``keep`` and the message
carries their digests, never their bytes.
"""

from __future__ import annotations

import datetime as dt
import email
import email.errors
import email.policy
import email.utils
import html
import re
from collections.abc import Callable
from email.message import EmailMessage
from html.parser import HTMLParser

from ..errors import InvalidInput
from .records import Attachment, Message

__all__ = ["KEPT_HEADERS", "check_header", "html_to_text", "parse_email"]

# Headers a triage workflow uses besides the parsed fields; the rest stay in the raw message.
KEPT_HEADERS = ("List-Id", "Auto-Submitted", "Precedence", "Reply-To")
_DAMAGED = (
    email.errors.InvalidBase64CharactersDefect,
    email.errors.InvalidBase64PaddingDefect,
    email.errors.InvalidBase64LengthDefect,
)

# Where attachment bytes go: returns the blob digest.
Keep = Callable[[bytes], str]


def check_header(name: str, value: str) -> str:
    """``value`` if it is safe as one header line; an InvalidInput for a line break in it."""
    if "\r" in value or "\n" in value:
        raise InvalidInput(f"the {name} header holds a line break (a header injection attempt); refused")
    return value


def parse_email(raw: bytes, *, keep: Keep, max_attachment_bytes: int, source: str | None = None) -> Message:
    """Parse ``raw`` into a Message; an InvalidInput says why an email cannot be used as it is."""
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    try:
        headers = {name: _header(msg, name) for name in ("From", "To", "Cc", "Subject", "Message-ID")}
    except (ValueError, LookupError, email.errors.HeaderParseError) as e:
        raise InvalidInput(f"a header cannot be decoded: {e}") from None
    text, html_body, attachments = _body(msg, keep, max_attachment_bytes)
    return Message(
        source=source,
        source_id=headers["Message-ID"] or None,
        message_id=headers["Message-ID"] or None,
        in_reply_to=_header(msg, "In-Reply-To") or None,
        references=_header(msg, "References").split(),
        sender=_addresses(headers["From"])[0] if headers["From"] else None,
        to=_addresses(headers["To"]),
        cc=_addresses(headers["Cc"]),
        subject=headers["Subject"],
        text=text if text else html_to_text(html_body or ""),
        html=html_body,
        attachments=attachments,
        received_at=_date(msg),
        headers={name: _header(msg, name) for name in KEPT_HEADERS if msg.get(name) is not None},
    )


def _header(msg: EmailMessage, name: str) -> str:
    value = msg.get(name)
    return "" if value is None else check_header(name, str(value)).strip()


def _addresses(value: str) -> list[str]:
    return [addr for _, addr in email.utils.getaddresses([value]) if addr]


def _date(msg: EmailMessage) -> dt.datetime | None:
    try:
        value = msg.get("Date")
        return None if value is None else email.utils.parsedate_to_datetime(str(value))
    except (TypeError, ValueError):
        return None


def _body(msg: EmailMessage, keep: Keep, limit: int) -> tuple[str, str | None, list[Attachment]]:
    text: list[str] = []
    html_parts: list[str] = []
    attachments: list[Attachment] = []
    for part in msg.walk():
        if part.is_multipart():
            continue
        assert isinstance(part, EmailMessage)
        if part.is_attachment() or part.get_content_maintype() not in ("text",):
            attachments.append(_attachment(part, keep, limit))
        elif part.get_content_subtype() == "html":
            html_parts.append(_text(part))
        else:
            text.append(_text(part))
    return "\n".join(text).strip(), "\n".join(html_parts) or None, attachments


def _text(part: EmailMessage) -> str:
    payload = _payload(part)
    charset = part.get_content_charset() or "us-ascii"
    try:
        return payload.decode(charset)
    except LookupError:
        raise InvalidInput(f"a text part declares the unknown charset {charset!r}") from None
    except UnicodeDecodeError as e:
        if charset == "us-ascii":  # undeclared 8-bit text is common and usually UTF-8
            try:
                return payload.decode("utf-8")
            except UnicodeDecodeError:
                pass
        raise InvalidInput(f"a text part is not valid {charset} (byte {e.start})") from None


def _payload(part: EmailMessage) -> bytes:
    data = part.get_payload(decode=True)
    if any(isinstance(d, _DAMAGED) for d in part.defects):
        raise InvalidInput("a part's base64 encoding is damaged")
    return data if isinstance(data, bytes) else b""


def _attachment(part: EmailMessage, keep: Keep, limit: int) -> Attachment:
    data = _payload(part)
    name = part.get_filename()
    if len(data) > limit:
        raise InvalidInput(
            f"the attachment {name or '(unnamed)'} is {len(data)} bytes, over the limit of {limit}"
            " (raise max_attachment_size under the trigger to accept it)"
        )
    return Attachment(filename=name, content_type=part.get_content_type(), size=len(data), blob=keep(data))


class _TextOfHtml(HTMLParser):
    """Text of an HTML body: blocks become lines, scripts and styles vanish, entities are decoded."""

    _BLOCKS = frozenset({"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style", "head"):
            self._skip += 1
        elif tag in self._BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style", "head"):
            self._skip = max(0, self._skip - 1)
        elif tag in self._BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def html_to_text(markup: str) -> str:
    parser = _TextOfHtml()
    parser.feed(markup)
    parser.close()
    lines = (re.sub(r"[ \t\r\f\v]+", " ", line).strip() for line in "".join(parser.parts).split("\n"))
    return html.unescape(re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip())
