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


async def test_a_worker_cut_off_longer_than_its_lease_stops_calling_out(
    relayed: tuple[ThreadedRelay, str],
    pg_url: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A worker that cannot renew its leases stops its runs before they lapse: once another worker has
    taken a run over, the first must not go on paying for model calls (or making effects) on it."""
    from crewline import RetryPolicy
    from crewline.testing import FakeProvider, Fault

    relay, cut_off_url = relayed
    monkeypatch.setenv("FAKE_KEY", "sk-test")
    patient = RetryPolicy(max_attempts=1000, initial_delay=0.05, max_delay=0.1, jitter=0)
    with FakeProvider(api_key="sk-test") as fake:
        models = {
            "default": "fake/m",
            "providers": {
                "fake": {"format": "openai", "base_url": fake.url + "/v1", "api_key_env": "FAKE_KEY"}
            },
            "retry": {"attempts": 1},
        }

        def app_on(url: str) -> App:
            settings = Settings(
                database_url=url, poll_interval=0.05, lease_seconds=1.5, sections={"models": models}
            )
            app = App(settings=settings)

            @app.workflow(name="ask")
            async def ask(ctx: Context) -> str:
                reply: str = await ctx.llm(messages="the one question", max_tokens=5, retry=patient)
                return reply

            return app

        first, second = app_on(cut_off_url), app_on(pg_url)
        fake.fault_mix(1.0, [Fault.http(500)])  # the provider is down: the first worker keeps retrying
        worker_a = first.worker(concurrency=1, worker_id="a")
        worker_b = second.worker(concurrency=1, worker_id="b")
        tasks = []
        try:
            rid = await second.start("ask")
            tasks.append(asyncio.create_task(worker_a.run()))
            while not fake.requests:
                await asyncio.sleep(0.05)
            tasks.append(asyncio.create_task(worker_b.run()))
            relay.cut()  # worker a loses the database (not the provider) for longer than its lease
            while (await second.get_run(rid)).lease_owner != "b":
                await asyncio.sleep(0.05)
            # worker a stopped the run before its lease lapsed, without waiting to hear it had lost it
            assert f"could not renew the lease on run {rid} in time" in caplog.text
            fake.fault_mix(0, [])  # the provider recovers while worker a is still cut off
            await asyncio.sleep(0.5)
            relay.restore()
            assert await second.result(rid, timeout=30) == "echo: the one question"
            await asyncio.sleep(2.0)  # worker a would have had its answer too by now
            asked = [r for r in fake.answered if r.body["messages"][-1]["content"] == "the one question"]
            assert len(asked) == 1, f"the provider answered the one call {len(asked)} times"
        finally:
            relay.restore()
            worker_a.stop()
            worker_b.stop()
            await asyncio.gather(*tasks, return_exceptions=True)
            first.close()
            second.close()
