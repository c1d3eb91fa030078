"""Inbox benchmark: how fast the IMAP trigger turns emails into runs, and what parsing one costs.

Starts Debian's Dovecot on loopback (as the tests do), appends ``--emails`` emails to INBOX (a plain one,
an HTML one with a 20 KB attachment, alternating), then starts one ``crewline worker`` on a fresh SQLite
database (or ``--pg URL``, an empty PostgreSQL database) with ``[triggers.inbox]`` and times until every
email has started its run: emails per second, end to end (fetch, parse, attachment blobs, run insert with
the Message-ID as idempotency key, marking seen, watermark). The runs themselves do nothing. Then it times
``parse_email`` alone over the same emails. Prints one table with the machine and the command.

    python bench/inbox.py                   # 500 emails on SQLite
    python bench/inbox.py --emails 2000 --pg postgresql://localhost/bench_empty
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from tests.connectors.mail_servers import PASSWORD, Dovecot, running_dovecot

from crewline import App, Context, Settings
from crewline.connectors.email_message import parse_email
from crewline.connectors.records import Message

ATTACHMENT = base64.encodebytes(os.urandom(20_000)).decode()


def email_number(i: int) -> bytes:
    head = (
        f"From: c{i}@example.com\r\nTo: ada@example.com\r\nSubject: email {i}\r\nMessage-ID: <{i}@bench>\r\n"
    )
    if i % 2 == 0:
        return (head + f"Content-Type: text/plain\r\n\r\nPlain text {i}.\r\n").encode()
    return (
        head + 'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
        f"Content-Type: text/html\r\n\r\n<p>Hello <b>{i}</b></p>\r\n--b\r\nContent-Type: application/pdf\r\n"
        'Content-Disposition: attachment; filename="a.pdf"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
        f"{ATTACHMENT}\r\n--b--\r\n"
    ).encode()


async def trigger_seconds(server: Dovecot, url: str, n: int, project: Path) -> float:
    os.environ["BENCH_IMAP_PASSWORD"] = PASSWORD
    imap = {"type": "imap", "host": "127.0.0.1", "port": server.port, "tls": "none", "user": server.user}
    sections = {
        "connectors": {"mail": {**imap, "password": "env:BENCH_IMAP_PASSWORD"}},
        "triggers": {"inbox": {"connector": "mail", "workflow": "noop", "poll_interval": "5s"}},
    }
    app = App(settings=Settings(database_url=url, project_dir=project, sections=sections))

    @app.workflow()
    async def noop(ctx: Context, msg: Message) -> None:
        return None

    worker = app.worker(concurrency=8)
    began = time.perf_counter()
    task = asyncio.create_task(worker.run())
    while len(await app.list_runs(limit=n + 1)) < n:
        await asyncio.sleep(0.02)
    seconds = time.perf_counter() - began
    worker.stop()
    await task
    await app.aclose()
    return seconds


def parse_seconds(raws: list[bytes]) -> float:
    began = time.perf_counter()
    for raw in raws:
        parse_email(raw, keep=lambda d: hashlib.sha256(d).hexdigest(), max_attachment_bytes=10**7)
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emails", type=int, default=500)
    parser.add_argument("--pg", help="an empty PostgreSQL database to use instead of SQLite")
    args = parser.parse_args()
    raws = [email_number(i) for i in range(args.emails)]
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp)
        with running_dovecot(project) as server:
            for raw in raws:
                server.append(raw)
            url = args.pg or f"sqlite:///{project}/bench.db"
            seconds = asyncio.run(trigger_seconds(server, url, args.emails, project))
    parsing = parse_seconds(raws)
    print(f"machine: {platform.machine()} {os.cpu_count()} cpus, Python {platform.python_version()}")
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"database: {'PostgreSQL' if args.pg else 'SQLite'}")
    print(f"{'measure':<44}{'value':>14}")
    print(f"{'emails to runs, end to end (emails/s)':<44}{args.emails / seconds:>14.1f}")
    print(f"{'  per email (ms)':<44}{seconds / args.emails * 1000:>14.2f}")
    print(f"{'parse_email alone (emails/s)':<44}{args.emails / parsing:>14.0f}")


if __name__ == "__main__":
    main()
