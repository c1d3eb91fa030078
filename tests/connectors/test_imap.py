"""The IMAP connector's connection: TLS and STARTTLS against Dovecot, trusted through ca_file or refused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from crewline import App, ConnectorError, Settings
from crewline.connectors.imap import ImapConnector

from .mail_servers import PASSWORD, Dovecot, dovecot_tls, message

__all__ = ["dovecot_tls"]


@pytest.fixture(autouse=True)
def imap_password(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TEST_IMAP_PASSWORD", PASSWORD)
    yield


def connector(server: Dovecot, sqlite_url: str, **settings: Any) -> tuple[App, ImapConnector]:
    table = {"type": "imap", "host": "127.0.0.1", "user": server.user, "password": "env:TEST_IMAP_PASSWORD"}
    app = App(sqlite_url, settings=Settings(sections={"connectors": {"mail": table | settings}}))
    found = app.engine.connectors.get("mail")
    assert isinstance(found, ImapConnector)
    return app, found


@pytest.mark.parametrize("tls", ["tls", "starttls"])
async def test_tls_and_starttls_with_the_servers_ca(
    dovecot_tls: Dovecot, sqlite_url: str, tmp_path: Path, tls: str
) -> None:
    port = dovecot_tls.tls_port if tls == "tls" else dovecot_tls.port
    app, mail = connector(dovecot_tls, sqlite_url, tls=tls, port=port, ca_file=str(tmp_path / "cert.pem"))
    dovecot_tls.append(message("over tls", message_id="<tls-1@example.com>"))
    assert await mail.holds("INBOX", "<tls-1@example.com>") is True
    assert await mail.holds("INBOX", "<nope@example.com>") is False
    app.close()


async def test_an_untrusted_certificate_is_one_clear_error(dovecot_tls: Dovecot, sqlite_url: str) -> None:
    app, mail = connector(dovecot_tls, sqlite_url, tls="tls", port=dovecot_tls.tls_port)
    with pytest.raises(ConnectorError) as caught:
        await mail.holds("INBOX", "<x@example.com>")
    assert not caught.value.retryable
    assert str(caught.value) == (
        f"connector 'mail': TLS failed while connecting to 127.0.0.1:{dovecot_tls.tls_port} (self-signed certificate): "
        "check tls, and ca_file for a server with its own CA"
    )
    app.close()
