"""Real mail servers on loopback for the tests: Debian's Dovecot (IMAP) and aiosmtpd (SMTP).

``dovecot`` starts ``/usr/sbin/dovecot -F`` with a throwaway configuration in the test's tmp dir (its
own base and state dirs, a passwd-file user, maildirs in tmp, no TLS, IDLE on) on a free loopback port,
and stops it afterwards. ``smtp_server`` runs aiosmtpd and counts deliveries by Message-ID, so a test
can assert that an email went out exactly once.
"""

from __future__ import annotations

import email
import email.policy
import grp
import imaplib
import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

DOVECOT = "/usr/sbin/dovecot"
USER = "ada"
PASSWORD = "imap-test-password-7f3a"

_CONF = """\
protocols = imap
listen = 127.0.0.1
base_dir = {tmp}/run
state_dir = {tmp}/state
log_path = {tmp}/dovecot.log
info_log_path = {tmp}/dovecot.log
{ssl}
disable_plaintext_auth = no
auth_mechanisms = plain login
first_valid_uid = 0
first_valid_gid = 0
mail_uid = {mail_uid}
mail_gid = {mail_gid}
mail_location = maildir:{tmp}/mail/%u
default_internal_user = {user}
default_internal_group = {group}
default_login_user = {login_user}
imap_idle_notify_interval = 1 secs
shutdown_clients = yes
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {tls_port}
  }}
}}
service anvil {{
  chroot =
}}
service imap-login {{
  chroot =
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {tmp}/users
}}
userdb {{
  driver = static
  args = uid={mail_uid} gid={mail_gid} home={tmp}/mail/%u
}}
namespace inbox {{
  inbox = yes
  mailbox Sent {{
    special_use = \\Sent
    auto = create
  }}
  mailbox Processed {{
    auto = create
  }}
}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Dovecot:
    """A running Dovecot on ``127.0.0.1:port`` with one user; restartable to cut every connection."""

    tmp: Path
    port: int
    tls_port: int = 0  # implicit TLS (imaps), when started with a certificate
    user: str = USER
    password: str = PASSWORD
    process: subprocess.Popen[bytes] | None = None

    @property
    def conf(self) -> Path:
        return self.tmp / "dovecot.conf"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [DOVECOT, "-F", "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    if s.recv(100).startswith(b"* OK"):
                        return
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                log = (self.tmp / "dovecot.log").read_text() if (self.tmp / "dovecot.log").exists() else ""
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                raise RuntimeError(f"dovecot did not start: {err}\n{log[-2000:]}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def restart(self) -> None:
        """Stop and start again: every client connection is cut."""
        self.stop()
        self.start()

    def client(self) -> imaplib.IMAP4:
        imap = imaplib.IMAP4("127.0.0.1", self.port, timeout=10)
        imap.login(self.user, self.password)
        return imap

    def append(self, raw: bytes | str, mailbox: str = "INBOX") -> None:
        data = raw.encode() if isinstance(raw, str) else raw
        imap = self.client()
        try:
            status, detail = imap.append(mailbox, "", None, data)  # type: ignore[arg-type]
            assert status == "OK", detail
        finally:
            imap.logout()

    def search(self, mailbox: str, *criteria: str) -> list[bytes]:
        """The messages of ``mailbox`` matching ``criteria`` (e.g. "UNSEEN"), as raw bytes."""
        imap = self.client()
        try:
            imap.select(mailbox)
            _, data = imap.uid("SEARCH", *(criteria or ("ALL",)))
            out = []
            for uid in data[0].split():
                _, fetched = imap.uid("FETCH", uid, "(BODY.PEEK[])")
                out.append(bytes(fetched[0][1]))  # type: ignore[index]
            return out
        finally:
            imap.logout()

    def recreate(self, mailbox: str = "INBOX") -> None:
        """Empty ``mailbox`` and give it a new UIDVALIDITY, as a server does for a recreated mailbox."""
        self.stop()
        folder = self.tmp / "mail" / self.user
        target = folder if mailbox == "INBOX" else folder / f".{mailbox}"
        for sub in ("cur", "new", "tmp"):
            shutil.rmtree(target / sub, ignore_errors=True)
        for name in ("dovecot-uidlist", "dovecot.index", "dovecot.index.log", "dovecot.index.cache"):
            (target / name).unlink(missing_ok=True)
        time.sleep(1.1)  # UIDVALIDITY is a timestamp in seconds: make sure the new one differs
        self.start()


def message(
    subject: str = "Hello",
    body: str = "Hi there",
    *,
    sender: str = "Grace <grace@example.com>",
    to: str = "ada@example.com",
    message_id: str | None = None,
    extra: str = "",
) -> str:
    mid = message_id or f"<{time.time_ns()}.{os.getpid()}@example.com>"
    return (
        f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: {mid}\r\n"
        f"Date: Fri, 27 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n{extra}"
        f"Content-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
    )


@pytest.fixture
def dovecot(tmp_path: Path) -> Iterator[Dovecot]:
    """A Dovecot IMAP server on loopback, with user ``ada`` (password :data:`PASSWORD`)."""
    if not os.path.exists(DOVECOT):
        pytest.skip("dovecot is not installed: scripts/setup installs Debian's dovecot-imapd")
    with running_dovecot(tmp_path) as server:
        yield server


@pytest.fixture
def dovecot_tls(tmp_path: Path) -> Iterator[Dovecot]:
    """As ``dovecot``, also offering STARTTLS on ``port`` and TLS on ``tls_port``, with a self-signed
    certificate (``tmp_path/cert.pem``, its own CA)."""
    if not os.path.exists(DOVECOT):
        pytest.skip("dovecot is not installed: scripts/setup installs Debian's dovecot-imapd")
    with running_dovecot(tmp_path, certificate(tmp_path)) as server:
        yield server


@contextmanager
def running_dovecot(keep_log_in: Path, tls: tuple[Path, Path] | None = None) -> Iterator[Dovecot]:
    """Start Dovecot with a throwaway configuration (TLS with ``tls``, a (cert, key) pair); its log is
    copied to ``keep_log_in`` at the end."""
    # Dovecot's login, auth and mail processes run unprivileged (never as root) and must reach its
    # files: pytest's tmp dirs are private to their owner, so the server gets a directory others may enter.
    tmp = Path(tempfile.mkdtemp(prefix="crewline-dovecot-"))
    tmp.chmod(0o755)
    accounts = _accounts()
    for sub in ("run", "state", "mail"):
        (tmp / sub).mkdir()
    os.chown(tmp / "mail", accounts["mail_uid"], accounts["mail_gid"])
    port, tls_port = free_port(), (free_port() if tls else 0)
    ssl_conf = "ssl = no" if tls is None else f"ssl = yes\nssl_cert = <{tls[0]}\nssl_key = <{tls[1]}"
    conf = _CONF.format(tmp=tmp, port=port, tls_port=tls_port, ssl=ssl_conf, **accounts)
    (tmp / "dovecot.conf").write_text(conf)
    (tmp / "users").write_text(f"{USER}:{{PLAIN}}{PASSWORD}\n")
    server = Dovecot(tmp, port, tls_port)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        log = tmp / "dovecot.log"
        if log.exists():
            shutil.copy(log, keep_log_in / "dovecot.log")
        shutil.rmtree(tmp, ignore_errors=True)


def _accounts() -> dict[str, Any]:
    """Who Dovecot's processes run as: the current user, or Debian's dovecot/dovenull under root."""
    uid, gid = os.getuid(), os.getgid()
    if uid != 0:
        user, group = pwd.getpwuid(uid).pw_name, grp.getgrgid(gid).gr_name
        return {"mail_uid": uid, "mail_gid": gid, "user": user, "group": group, "login_user": user}
    dovecot = pwd.getpwnam("dovecot")
    return {
        "mail_uid": dovecot.pw_uid,
        "mail_gid": dovecot.pw_gid,
        "user": "dovecot",
        "group": "dovecot",
        "login_user": "dovenull",
    }


# --- SMTP ----------------------------------------------------------------------------------------


@dataclass
class SmtpSink:
    """What the aiosmtpd server received: each message, and deliveries counted by Message-ID."""

    host: str
    port: int
    messages: list[email.message.EmailMessage] = field(default_factory=list)
    deliveries: Counter[str] = field(default_factory=Counter)
    # Called with each accepted email before the server answers 250 (e.g. to kill the sender right then).
    before_reply: Callable[[bytes], None] | None = None

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(msg, email.message.EmailMessage)
        self.messages.append(msg)
        self.deliveries[str(msg.get("Message-ID", ""))] += 1
        if self.before_reply is not None:
            self.before_reply(envelope.content)
        return "250 OK"


SMTP_USER = "ada"
SMTP_PASSWORD = "smtp-test-password-91c2"


def _authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
        SMTP_USER.encode(),
        SMTP_PASSWORD.encode(),
    )
    return AuthResult(success=ok, handled=False)  # handled=False: the server answers 535 itself


def _serve_smtp(**options: Any) -> Iterator[SmtpSink]:
    port = free_port()
    sink = SmtpSink("127.0.0.1", port)
    controller = Controller(sink, hostname="127.0.0.1", port=port, **options)
    controller.start()
    try:
        yield sink
    finally:
        controller.stop()


def certificate(directory: Path) -> tuple[Path, Path]:
    """A throwaway self-signed certificate for 127.0.0.1 (its own CA): (cert, key) PEM files."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subject = ["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
    command = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", *subject]
    subprocess.run([*command, "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


@pytest.fixture
def smtp_tls_server(tmp_path: Path) -> Iterator[SmtpSink]:
    """As ``smtp_server``, requiring STARTTLS with a self-signed certificate (``tmp_path/cert.pem``)."""
    cert, key = certificate(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    yield from _serve_smtp(tls_context=context, require_starttls=True)


@pytest.fixture
def smtp_server() -> Iterator[SmtpSink]:
    """An SMTP server (aiosmtpd) on a free loopback port counting deliveries by Message-ID."""
    yield from _serve_smtp()


@pytest.fixture
def smtp_auth_server() -> Iterator[SmtpSink]:
    """As ``smtp_server``, requiring AUTH as :data:`SMTP_USER` / :data:`SMTP_PASSWORD` (over plain TCP,
    which only a loopback test may allow)."""
    yield from _serve_smtp(
        authenticator=_authenticate,
        auth_required=True,
        auth_require_tls=False,
        auth_exclude_mechanism=["LOGIN"],
    )
