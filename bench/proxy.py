"""Latency the crewline proxy adds over calling the upstream directly, at fixed arrival rates, side by side
with the LiteLLM proxy.

    bench/run-proxy [--rates 25,50,100,200,300,400,500,800,1200] [--seconds 5] [--clients 2] [--no-litellm]

``bench/run-proxy`` installs ``litellm[proxy]`` (bench/requirements-proxy.txt) into bench/.venv, which is
never a dependency of crewline, and runs this file there; ``.venv/bin/python bench/proxy.py --no-litellm``
measures crewline alone.

Starts, each in its own process: the fake provider (``python -m crewline.testing``), ``crewline serve
--no-workers`` on a scratch SQLite database with the gateway pointed at the fake (prices, budget ledger
and call records on), and the LiteLLM proxy (one worker, no database) on the same fake. crewline is
driven with two keys: ``crewline`` has no limit, so each call's spend is settled in the ledger (per key,
day and month) and recorded after the reply, in the background; ``crewline$`` has a daily budget
(``--budget``), so each call also waits for its reservation to commit before going upstream, which is
what makes the budget impossible to overspend across processes.

Open loop: requests are sent on a fixed schedule (``rate`` per second for ``seconds``), whether or not
earlier ones have answered, by ``--clients`` processes, each a thin HTTP/1.1 client on a pool of
keep-alive connections (pre-encoded request bytes, no JSON parsing), so the client is not what saturates.
Latency is counted from each request's *scheduled* time, so a server that falls behind is charged for the
queue it builds (no coordinated omission). A target whose p99 reaches ``--slo`` ms or that has errors is
not driven at higher rates. Streaming time to first byte is measured first, sequentially: the time to
the first chunk of the response body.

The clients share the machine's cores with the servers: figures are comparative, never assertions.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Coroutine
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

T = TypeVar("T")

BODY: dict[str, Any] = {
    "model": "gpt-test",
    "messages": [{"role": "user", "content": "Classify: my invoice is wrong"}],
    "max_tokens": 20,
}

# -- the servers ---------------------------------------------------------------------------------------------


def start_fake() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-m", "crewline.testing"], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def start_crewline(
    fake_url: str, scratch: Path, budget: str | None
) -> tuple[subprocess.Popen[str], str, str, str | None]:
    """The server, its URL, a proxy key without a limit and (unless ``budget`` is None) one with a daily
    budget. Both keys' calls are settled in the budget ledger and recorded; only the limited key's calls
    also wait for a reservation to commit before going upstream."""
    # The load generator is one address opening a connection per request in flight, which past the
    # server's capacity outgrows the per-address cap meant for abusive clients (LiteLLM has none).
    (scratch / "crewline.toml").write_text(
        f"""[server]
max_connections_per_client = 100000
[models]
max_tokens = 20
[models.providers.up]
format = "openai"
base_url = "{fake_url}/v1"
api_key_env = "FAKE_KEY"
[models.aliases]
gpt-test = "up/gpt-test"
[models.prices]
"up/gpt-test" = {{ input = 0.15, output = 0.6 }}
"""
    )
    env = {
        **os.environ,
        "CREWLINE_PROJECT_DIR": str(scratch),
        "FAKE_KEY": "sk-bench",
        "CREWLINE_DATABASE_URL": f"sqlite:///{scratch}/bench.db",
    }
    cli = [sys.executable, "-m", "crewline"]

    def new_key(*extra: str) -> str:
        return subprocess.run(
            [*cli, "keys", "create", "--scope", "proxy", *extra],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()

    key = new_key()
    limited = None if budget is None else new_key("--budget", budget)
    proc = subprocess.Popen(
        [*cli, "serve", "--no-workers", "--port", "0"], env=env, stderr=subprocess.PIPE, text=True
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        found = re.search(r"listening on (http://\S+)", line)
        if found:
            _drain(proc)
            return proc, found.group(1), key, limited
    raise SystemExit("crewline serve did not start")


def _drain(proc: subprocess.Popen[str]) -> None:
    def drain() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            if "Traceback" in line or "ERROR" in line:
                print(f"crewline serve: {line.rstrip()}", file=sys.stderr)

    threading.Thread(target=drain, daemon=True).start()


def start_litellm(fake_url: str, scratch: Path) -> tuple[subprocess.Popen[str], str, str] | None:
    """The LiteLLM proxy with one worker and no database; it refuses to start without a master key, which
    is then what clients send (checked in memory, as crewline checks its cached key)."""
    exe = Path(sys.executable).with_name("litellm")
    if not exe.exists():
        return None
    port = _free_port()
    master = f"sk-{secrets.token_hex(32)}"
    (scratch / "litellm.yaml").write_text(
        "model_list:\n  - model_name: gpt-test\n    litellm_params:\n      model: openai/gpt-test\n"
        f"      api_base: {fake_url}/v1\n      api_key: sk-bench\n"
        f"general_settings:\n  master_key: {master}\n"
    )
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"}
    env.pop("DATABASE_URL", None)
    proc = subprocess.Popen(
        [str(exe), "--config", str(scratch / "litellm.yaml"), "--port", str(port), "--num_workers", "1"],
        stdout=subprocess.DEVNULL,
        stderr=open(scratch / "litellm.log", "w"),  # noqa: SIM115 - lives as long as the process
        text=True,
        env=env,
    )
    return proc, f"http://127.0.0.1:{port}", master


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the load generator --------------------------------------------------------------------------------------


def _request(url: str, headers: dict[str, str], body: dict[str, Any]) -> tuple[str, int, bytes]:
    parts = urlsplit(url)
    data = json.dumps(body).encode()
    head = [
        "POST /v1/chat/completions HTTP/1.1",
        f"host: {parts.netloc}",
        "content-type: application/json",
        f"content-length: {len(data)}",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    return parts.hostname or "127.0.0.1", parts.port or 80, ("\r\n".join(head) + "\r\n\r\n").encode() + data


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes, start: float
) -> tuple[int, float, bool]:
    """Send one request and read the whole response: (status, ms from ``start`` to the first body byte,
    whether the connection may be reused)."""
    writer.write(request)
    head = (await reader.readuntil(b"\r\n\r\n")).lower()
    status = int(head[9:12])
    first = 0.0
    if b"transfer-encoding: chunked" in head:
        while True:
            size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
            if not first:
                first = (time.perf_counter() - start) * 1000
            if size == 0:
                await reader.readline()
                break
            await reader.readexactly(size + 2)
    else:
        found = re.search(rb"content-length: *(\d+)", head)
        await reader.readexactly(int(found.group(1)) if found else 0)
        first = (time.perf_counter() - start) * 1000
    return status, first, b"connection: close" not in head


async def _open_loop(
    url: str, headers: dict[str, str], rate: float, seconds: float, t0: float, index: int, clients: int
) -> tuple[list[float], int]:
    host, port, request = _request(url, headers, BODY)
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    latencies: list[float] = []
    errors = 0

    async def one(scheduled: float) -> None:
        nonlocal errors
        conn = idle.pop() if idle else None
        try:
            if conn is None:
                conn = await asyncio.open_connection(host, port)
            status, _, reuse = await asyncio.wait_for(_exchange(*conn, request, scheduled), 30)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError):
            errors += 1
            if conn is not None:
                conn[1].close()
            return
        latencies.append((time.perf_counter() - scheduled) * 1000)
        if status != 200:
            errors += 1
        if reuse:
            idle.append(conn)
        else:
            conn[1].close()

    start = time.perf_counter() + (t0 - time.time())  # the shared wall-clock start, on this clock
    tasks = []
    for i in range(index, int(rate * seconds), clients):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(scheduled)))
    await asyncio.gather(*tasks)
    for _, writer in idle:
        writer.close()
    return latencies, errors


def _client(
    url: str, headers: dict[str, str], rate: float, seconds: float, t0: float, index: int, clients: int
) -> tuple[list[float], int]:
    """One client process's share of the schedule (requests ``index``, ``index + clients``, ...)."""
    return _run(_open_loop(url, headers, rate, seconds, t0, index, clients))


def _ttfb(url: str, headers: dict[str, str], n: int) -> float:
    async def go() -> float:
        host, port, request = _request(url, headers, {**BODY, "stream": True})
        reader, writer = await asyncio.open_connection(host, port)
        times = []
        for _ in range(n):
            status, first, reuse = await _exchange(reader, writer, request, time.perf_counter())
            if status != 200:
                raise SystemExit(f"{url}: streaming answered {status}")
            times.append(first)
            if not reuse:
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
        writer.close()
        return statistics.median(times)

    return _run(go())


def _warm(url: str, headers: dict[str, str], timeout: float = 180) -> bool:
    async def go() -> bool:
        host, port, request = _request(url, headers, BODY)
        deadline = time.monotonic() + timeout
        while True:
            try:
                reader, writer = await asyncio.open_connection(host, port)
                for _ in range(200):
                    status, _, _ = await _exchange(reader, writer, request, time.perf_counter())
                    if status != 200:
                        raise SystemExit(f"{url} answered {status}")
                writer.close()
                return True
            except (OSError, asyncio.IncompleteReadError):
                if time.monotonic() > deadline:
                    return False
                await asyncio.sleep(0.5)

    return bool(_run(go()))


def _run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def _noop(_: object) -> None:
    pass


# -- the run -------------------------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(args: argparse.Namespace) -> None:
    scratch = Path(tempfile.mkdtemp(prefix="crewline-bench-proxy-"))
    fake, fake_url = start_fake()
    procs: list[subprocess.Popen[str]] = [fake]
    pool = ProcessPoolExecutor(args.clients, mp_context=multiprocessing.get_context("spawn"))
    try:
        crew, crew_url, key, limited = start_crewline(fake_url, scratch, args.budget)
        procs.append(crew)
        targets: dict[str, tuple[str, dict[str, str]]] = {
            "direct": (fake_url, {"authorization": "Bearer sk-bench"}),
            "crewline": (crew_url, {"authorization": f"Bearer {key}"}),
        }
        if limited is not None:
            targets["crewline$"] = (crew_url, {"authorization": f"Bearer {limited}"})
        if not args.no_litellm:
            started = start_litellm(fake_url, scratch)
            if started is None:
                print("litellm: not installed in this environment; skipped (use bench/run-proxy)")
            else:
                procs.append(started[0])
                targets["litellm"] = (started[1], {"authorization": f"Bearer {started[2]}"})
        for name, (url, headers) in targets.items():
            if not _warm(url, headers):
                log = scratch / "litellm.log"
                tail = log.read_text()[-3000:] if name == "litellm" and log.exists() else ""
                raise SystemExit(f"{name} at {url} did not become ready\n{tail}")
        list(pool.map(_noop, [None] * args.clients))  # the client processes are up before timing
        # Before the sweep: a target driven past its limit may still be working off its backlog after.
        first = {name: _ttfb(url, headers, args.ttfb) for name, (url, headers) in targets.items()}
        print(
            f"open loop, {args.seconds:g} s per rate, {args.clients} client processes, "
            f"latency from the scheduled send time; slo: p99 < {args.slo:g} ms and no errors"
        )
        print(
            f"{'rate/s':>7} {'target':>9} {'p50 ms':>8} {'p99 ms':>8} {'+p50':>8} {'+p99':>8} "
            f"{'errors':>6} {'sent':>6}"
        )
        best: dict[str, float | None] = dict.fromkeys(targets)
        failed: set[str] = set()
        for rate in args.rates:
            base = (0.0, 0.0)
            for name, (url, headers) in targets.items():
                if name in failed:
                    continue
                t0 = time.time() + 0.3
                shares = pool.map(
                    _client,
                    *zip(
                        *[
                            (url, headers, rate, args.seconds, t0, i, args.clients)
                            for i in range(args.clients)
                        ],
                        strict=True,
                    ),
                )
                lat: list[float] = []
                errors = 0
                for part, errs in shares:
                    lat += part
                    errors += errs
                p50, p99 = pct(lat, 0.5), pct(lat, 0.99)
                if name == "direct":
                    base = (p50, p99)
                ok = errors == 0 and p99 < args.slo
                if ok:
                    best[name] = rate
                else:
                    failed.add(name)
                print(
                    f"{rate:>7g} {name:>9} {p50:>8.2f} {p99:>8.2f} {p50 - base[0]:>8.2f} "
                    f"{p99 - base[1]:>8.2f} {errors:>6} {int(rate * args.seconds):>6}"
                    + ("" if ok else "  (slo missed)"),
                    flush=True,
                )
                time.sleep(1.0)  # let the last phase's stragglers and background writes settle
        print(f"\nstreaming time to first body byte (sequential, median of {args.ttfb}, before the sweep):")
        for name, ms in first.items():
            print(f"  {name:>9} {ms:7.2f} ms  (+{ms - first['direct']:.2f})")
        print(f"\nhighest rate with p99 < {args.slo:g} ms and no errors (of {args.rates}):")
        top = max(args.rates)
        for name, rate in best.items():
            shown = "none" if rate is None else f"{rate:g}/s" + ("+ (never missed)" if rate == top else "")
            print(f"  {name:>9} {shown}")
    finally:
        pool.shutdown(cancel_futures=True)
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--rates",
        type=lambda s: [float(x) for x in s.split(",")],
        default=[25, 50, 100, 200, 300, 400, 500, 800, 1200],
    )
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=2, help="load generator processes")
    parser.add_argument("--slo", type=float, default=100.0, help="p99 ms for 'highest rate'")
    parser.add_argument("--ttfb", type=int, default=200, help="streaming requests for time to first byte")
    parser.add_argument(
        "--budget",
        default="$1000000/day",
        help="daily budget of the second crewline key, target crewline$ (a ledger reservation committed "
        "before each call); 'none': only the key without a limit",
    )
    parser.add_argument("--no-litellm", action="store_true", help="measure crewline only")
    ns = parser.parse_args()
    if ns.budget == "none":
        ns.budget = None
    main(ns)
