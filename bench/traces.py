"""What tracing costs: engine steps/s and gateway p50 with OpenTelemetry export off and on, side by side.

    .venv/bin/python bench/traces.py [--seconds 4] [--rounds 4] [--calls 2000]

"On" is what ``[observe] otlp_endpoint`` builds: a tracer on the app's hub, spans batched to an OTLP/HTTP
collector; here a sink in its own process that accepts ``POST /v1/traces`` and discards it, so the
collector's work is not charged to crewline. The engine runs 10-step workflows one after another on a
worker in this process (SQLite, a fresh file per mode); the gateway is timed against the fake provider
as in bench/gateway.py, one call at a time. Modes take turns in blocks so drifts in machine load hit both.
Numbers, never assertions.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from crewline import App, Context, Settings
from crewline.models import Gateway
from crewline.models.call_log import CallRecord, model_call_event
from crewline.observe.events import Observers
from crewline.observe.trace_config import TraceSettings
from crewline.observe.traces import Tracer
from crewline.store import open_database

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gateway import BODY, blocks, config, pct, start_fake

STEPS = 10


def sink() -> None:
    """Accept OTLP/HTTP exports and drop them (run as ``traces.py --sink``; prints its URL)."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(f"http://127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()


async def inc(n: int) -> int:
    return n + 1


def make_app(directory: str, name: str, endpoint: str | None) -> App:
    observe = {"otlp_endpoint": endpoint} if endpoint else {}
    url = f"sqlite:///{directory}/{name}.db"
    app = App(settings=Settings().with_(database_url=url, sections={"observe": observe}))

    @app.workflow(name="ten")
    async def ten(ctx: Context, n: int) -> int:
        for _ in range(STEPS):
            n = await ctx.step(inc, n)
        return n

    return app


async def engine_window(app: App, seconds: float) -> float:
    """Steps per second over ``seconds`` of back-to-back runs."""
    done = 0
    end = time.perf_counter() + seconds
    start = time.perf_counter()
    while time.perf_counter() < end:
        rid = await app.start("ten", 0)
        assert await app.result(rid, timeout=60, poll=0.001) == STEPS
        done += STEPS
    return done / (time.perf_counter() - start)


async def engine(endpoint: str, seconds: float, rounds: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"off": [], "on": []}
    with tempfile.TemporaryDirectory() as directory:
        apps = {"off": make_app(directory, "off", None), "on": make_app(directory, "on", endpoint)}
        tasks = [asyncio.create_task(a.worker(concurrency=4).run()) for a in apps.values()]
        for app in apps.values():
            await engine_window(app, 1.0)  # warm-up
        for _ in range(rounds):
            for mode, app in apps.items():
                out[mode].append(await engine_window(app, seconds))
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for app in apps.values():
            await app.aclose()
    return out


async def gateway(fake_url: str, endpoint: str, calls: int) -> dict[str, list[float]]:
    db = open_database(f"sqlite:///{tempfile.mkdtemp()}/gateway.db")
    env = {"BENCH_KEY": "sk-bench"}
    hub = Observers()
    tracer = Tracer.exporting(TraceSettings.from_section({"otlp_endpoint": endpoint}, {}))
    hub.add(tracer)

    def on_call(record: CallRecord) -> None:
        if hub:
            hub.emit(model_call_event(record))

    gateways = {
        "off": Gateway(config(fake_url, False), db, environ=env),
        "on": Gateway(config(fake_url, False), db, environ=env, on_call=on_call),
    }
    scope = {"workflow": "bench"}

    def path(gw: Gateway) -> Any:
        async def call() -> None:
            await gw.complete("main", BODY["messages"], max_tokens=50, budget_scope=scope)

        return call

    async def settle() -> None:
        for gw in gateways.values():
            await gw.flush()

    results = await blocks({mode: path(gw) for mode, gw in gateways.items()}, calls, settle)
    for gw in gateways.values():
        await gw.aclose()
    tracer.shutdown()
    db.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="each engine window")
    parser.add_argument("--rounds", type=int, default=4, help="engine windows per mode")
    parser.add_argument("--calls", type=int, default=2000, help="gateway calls per mode")
    parser.add_argument("--sink", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sink:
        sink()
        return
    sink_proc = subprocess.Popen([sys.executable, __file__, "--sink"], stdout=subprocess.PIPE, text=True)
    fake_proc, fake_url = start_fake()
    try:
        assert sink_proc.stdout is not None
        endpoint = sink_proc.stdout.readline().strip()
        steps = asyncio.run(engine(endpoint, args.seconds, args.rounds))
        calls = asyncio.run(gateway(fake_url, endpoint, args.calls))
    finally:
        for proc in (sink_proc, fake_proc):
            proc.terminate()
            proc.wait()
    off, on = statistics.median(steps["off"]), statistics.median(steps["on"])
    print(
        f"engine, 10-step runs one at a time (SQLite): off {off:.0f} steps/s, on {on:.0f} steps/s "
        f"({(on - off) / off * 100:+.1f}%)"
    )
    p_off, p_on = pct(calls["off"], 50), pct(calls["on"], 50)
    print(
        f"gateway.complete p50: off {p_off:.3f} ms, on {p_on:.3f} ms ({(p_on - p_off) / p_off * 100:+.1f}%); "
        f"p99 off {pct(calls['off'], 99):.3f} ms, on {pct(calls['on'], 99):.3f} ms"
    )


if __name__ == "__main__":
    main()
