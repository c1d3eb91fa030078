"""A database outage while workers run: they back off, reconnect, and lose no run.

PostgreSQL is reached through a TCP relay on loopback that the test can cut (dropping every connection
and refusing new ones) and restore, as a network partition or a database restart would. The relay runs
on its own event loop in a thread, since the store's synchronous calls block the test's loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import Counter
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest

from crewline import App, Context, Settings


class Relay:
    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.up = True
        self.server: asyncio.Server | None = None
        self.pipes: set[asyncio.Task[None]] = set()
        self.writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.up:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self.writers.update((writer, up_writer))
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(src, dst))
            self.pipes.add(task)
            task.add_done_callback(self.pipes.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        dst.close()

    def _cut(self) -> None:
        self.up = False
        for w in list(self.writers):
            w.close()
        self.writers.clear()

    async def _close(self) -> None:
        self._cut()
        if self.server is not None:
            self.server.close()
        for t in list(self.pipes):
            t.cancel()
        await asyncio.sleep(0)


class ThreadedRelay:
    """A :class:`Relay` on its own loop in a thread; cut() and restore() are safe from any thread."""

    def __init__(self, host: str, port: int) -> None:
        self.relay = Relay(host, port)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self.relay.start(), self.loop).result(10)

    def cut(self) -> None:
        self.loop.call_soon_threadsafe(self.relay._cut)

    def restore(self) -> None:
        self.relay.up = True

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.relay._close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def relayed(pg_url: str) -> Iterator[tuple[ThreadedRelay, str]]:
    parts = urlsplit(pg_url)
    relay = ThreadedRelay(parts.hostname or "127.0.0.1", parts.port or 5432)
    netloc = f"{parts.username}@127.0.0.1:{relay.port}" if parts.username else f"127.0.0.1:{relay.port}"
    yield relay, urlunsplit(parts._replace(netloc=netloc))
    relay.close()


async def test_workers_ride_out_a_database_outage(relayed: tuple[ThreadedRelay, str]) -> None:
    relay, url = relayed
    app = App(settings=Settings().with_(database_url=url, poll_interval=0.05, lease_seconds=5))
    calls = Counter[str]()

    async def work(i: int, step: int) -> int:
        calls[f"{i}:{step}"] += 1
        await asyncio.sleep(0.05)
        return step

    @app.workflow()
    async def chain(ctx: Context, i: int) -> int:
        total = 0
        for step in range(4):
            total += await ctx.step(work, i, step, effect="idempotent")
        return total

    try:
        ids = [await app.start(chain, i) for i in range(8)]
        worker = app.worker(concurrency=4)
        task = asyncio.create_task(worker.run())
        await asyncio.sleep(0.3)
        relay.cut()  # the database vanishes mid-run
        await asyncio.sleep(2.0)
        relay.restore()  # and comes back
        for rid in ids:
            assert await app.result(rid, timeout=90) == 6
        worker.stop()
        await task
        assert len(calls) == 8 * 4  # every step of every run happened
    finally:
        app.close()
