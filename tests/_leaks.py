"""One home for "is a secret anywhere it must not be": every row of every table, the log records and
the exported spans, as text to search.

``stored`` reads the schema the database actually has (not a list kept by hand), so a table added
tomorrow is searched too; bytes (payload blobs, encrypted values) are decoded leniently so a secret
written as bytes is found as well. ``leaks`` names each secret found and where, so a failure says what
leaked into which place rather than only that something did.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

import pytest

from crewline.store import Database, open_database
from tests.store.test_store import schema


def stored(db: Database) -> str:
    """Every column of every row of every table in ``db``, as text."""
    tables = schema(db)

    def read(conn: Any) -> list[str]:
        out: list[str] = []
        for table, columns in sorted(tables.items()):
            listed = ", ".join(f'"{c}"' for c in columns)
            for row in conn.all(f'SELECT {listed} FROM "{table}"'):
                out.append(f"{table}: " + " | ".join(_text(v) for v in row))
        return out

    return "\n".join(db.query(read))


def stored_at(url: str) -> str:
    """``stored`` for a database given by URL (after its App has closed)."""
    db = open_database(url)
    try:
        return stored(db)
    finally:
        db.close()


def logged(records: Iterable[logging.LogRecord] | pytest.LogCaptureFixture) -> str:
    """Each log record's message, its raw arguments and any traceback, as text."""
    if isinstance(records, pytest.LogCaptureFixture):
        records = records.records
    formatter = logging.Formatter()
    out = []
    for record in records:
        out.append(f"{record.name}: {record.getMessage()} {record.args!r}")
        if record.exc_info:
            out.append(formatter.formatException(record.exc_info))
    return "\n".join(out)


def exported(spans: Iterable[Mapping[str, Any]]) -> str:
    """The spans a collector received (names, attributes, events), as text."""
    return "\n".join(repr(dict(span)) for span in spans)


def leaks(secrets: Mapping[str, str], **places: str) -> list[str]:
    """``"<secret name> in <place>"`` for each secret value found in each place's text."""
    return [
        f"{name} in {place}"
        for name, value in secrets.items()
        for place, text in places.items()
        if value and value in text
    ]


def _text(value: Any) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", errors="replace")
    return str(value)
