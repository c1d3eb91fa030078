"""Latency the crewline proxy adds over calling the upstream directly, at fixed arrival rates, side by side
with the LiteLLM proxy.

    bench/run-proxy [--rates 25,50,100,200,300,400,500,800,1200] [--seconds 5] [--clients 2] [--no-litellm]
    bench/run-proxy --no-litellm --rates 50,300 --passes 5 --seconds 10     # what the budget adds, per pass

``bench/run-proxy`` installs ``litellm[proxy]`` (bench/requirements-proxy.txt) into bench/.venv, which is
never a dependency of crewline, and runs this file there; ``.venv/bin/python bench/proxy.py --no-litellm``
measures crewline alone.

Starts, each in its own process: the fake provider (``python -m crewline.testing``), ``crewline serve
--no-workers`` on a scratch SQLite database with the gateway pointed at the fake (prices, budget ledger
and call records on), and the LiteLLM proxy (one worker, no database) on the same fake. crewline is
driven with two keys: ``crewline`` has no limit, so each call's spend is settled in the ledger (per key,
day and month) and recorded after the reply, in the background; ``crewline$`` has a daily budget
(``--budget``), so each call also holds its worst case against it before going upstream (from budget
credit the server leased in a ledger write, ``crewline.models.credit``), which is what makes the budget
impossible to overspend across processes.

Two ways to drive them. The sweep (default) drives each target alone at each rate in turn and reports
the highest rate each sustains. ``--passes N`` instead runs N passes per rate, each driving direct and
both crewline keys together, request by request in turn (the crewline server takes the rate in all, each
key half of it, direct as much as one key), so that a loaded machine's noise hits all three alike; it
prints, per pass, what each key adds over direct and what the budgeted key adds over the other, then the
spread (min / median / max) across passes and how many passes kept +p99 <= 5 ms.

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


Target = tuple[str, dict[str, str]]  # URL and headers
Share = tuple[list[float], list[str]]  # latencies (ms) and what went wrong, per target


async def _open_loop(
    targets: list[Target], rate: float, seconds: float, t0: float, index: int, clients: int
) -> list[Share]:
    """Drive every target at ``rate``/s, in turn request by request (machine noise hits them alike)."""
    k = len(targets)
    requests = [_request(url, headers, BODY) for url, headers in targets]
    idle: list[list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]] = [[] for _ in targets]
    shares: list[Share] = [([], []) for _ in targets]

    async def one(t: int, scheduled: float) -> None:
        host, port, request = requests[t]
        conn = idle[t].pop() if idle[t] else None
        try:
            if conn is not None:
                try:
                    status, _, reuse = await asyncio.wait_for(_exchange(*conn, request, scheduled), 30)
                except (asyncio.IncompleteReadError, ConnectionError) as e:
                    if getattr(e, "partial", b""):
                        raise
                    # The server closed this idle keep-alive connection (after uvicorn's keep-alive
                    # timeout) as it was being reused: resend on a new one, as HTTP clients do.
                    conn[1].close()
                    conn = None
            if conn is None:
                conn = await asyncio.open_connection(host, port)
                status, _, reuse = await asyncio.wait_for(_exchange(*conn, request, scheduled), 30)
        except (
            OSError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            TimeoutError,
            ValueError,
        ) as e:
            shares[t][1].append(type(e).__name__)
            if conn is not None:
                conn[1].close()
            return
        shares[t][0].append((time.perf_counter() - scheduled) * 1000)
        if status != 200:
            shares[t][1].append(f"HTTP {status}")
        if reuse:
            idle[t].append(conn)
        else:
            conn[1].close()

    start = time.perf_counter() + (t0 - time.time())  # the shared wall-clock start, on this clock
    tasks = []
    # Request i is sent at i / (k * rate); this client sends every ``clients``-th, cycling the targets.
    for j, i in enumerate(range(index, int(rate * seconds) * k, clients)):
        scheduled = start + i / (rate * k)
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(j % k, scheduled)))
    await asyncio.gather(*tasks)
    for pool in idle:
        for _, writer in pool:
            writer.close()
    return shares


def _client(
    targets: list[Target], rate: float, seconds: float, t0: float, index: int, clients: int
) -> list[Share]:
    """One client process's share of the schedule (requests ``index``, ``index + clients``, ...)."""
    return _run(_open_loop(targets, rate, seconds, t0, index, clients))


def drive(
    pool: ProcessPoolExecutor, targets: list[Target], rate: float, args: argparse.Namespace
) -> list[Share]:
    """One phase: ``targets`` driven together at ``rate``/s each for ``args.seconds``, every client's share
    gathered per target."""
    t0 = time.time() + 0.3
    n = args.clients
    parts = pool.map(_client, [targets] * n, [rate] * n, [args.seconds] * n, [t0] * n, range(n), [n] * n)
    out: list[Share] = [([], []) for _ in targets]
    for shares in parts:
        for (lat, errs), (part, part_errs) in zip(out, shares, strict=True):
            lat += part
            errs += part_errs
    return out


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


def _errors(errs: list[str]) -> str:
    counts: dict[str, int] = {}
    for e in errs:
        counts[e] = counts.get(e, 0) + 1
    return ", ".join(f"{n} {what}" for what, n in sorted(counts.items()))


def sweep(pool: ProcessPoolExecutor, targets: dict[str, Target], args: argparse.Namespace) -> None:
    """Each target alone at each rate in turn; the highest rate each sustains within the slo."""
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
        for name, target in targets.items():
            if name in failed:
                continue
            [(lat, errs)] = drive(pool, [target], rate, args)
            p50, p99 = pct(lat, 0.5), pct(lat, 0.99)
            if name == "direct":
                base = (p50, p99)
            ok = not errs and p99 < args.slo
            if ok:
                best[name] = rate
            else:
                failed.add(name)
            print(
                f"{rate:>7g} {name:>9} {p50:>8.2f} {p99:>8.2f} {p50 - base[0]:>8.2f} "
                f"{p99 - base[1]:>8.2f} {len(errs):>6} {int(rate * args.seconds):>6}"
                + ("" if ok else f"  (slo missed{': ' + _errors(errs) if errs else ''})"),
                flush=True,
            )
            time.sleep(1.0)  # let the last phase's stragglers and background writes settle
    print(f"\nhighest rate with p99 < {args.slo:g} ms and no errors (of {args.rates}):")
    top = max(args.rates)
    for name, best_rate in best.items():
        shown = (
            "none"
            if best_rate is None
            else f"{best_rate:g}/s" + ("+ (never missed)" if best_rate == top else "")
        )
        print(f"  {name:>9} {shown}")


def passes(pool: ProcessPoolExecutor, targets: dict[str, Target], args: argparse.Namespace) -> None:
    """``args.passes`` passes per rate, each driving direct and both crewline keys together, request by
    request in turn, so that what the budget adds is measured under the same machine noise as the rest."""
    names = [n for n in ("direct", "crewline", "crewline$") if n in targets]
    if "litellm" in targets:
        print("litellm: left out of the interleaved passes (use the sweep: no --passes)")
    print(
        f"interleaved passes: {', '.join(names)} driven together, request by request in turn; at a rate R the "
        "crewline server takes R/s (its keys R/2 each when there are two) and direct as much as one key;\n"
        f"latency from the scheduled send time, "
        f"{args.seconds:g} s a pass, {args.clients} client processes;\n"
        "+p50/+p99: over direct in the same pass; $ adds: crewline$ minus crewline in the same pass"
    )
    print(
        f"{'rate/s':>7} {'pass':>4} {'direct p50':>10} {'p99':>6} | {'crewline +p50':>13} {'+p99':>6} | "
        f"{'crewline$ +p50':>14} {'+p99':>6} | {'$ adds p50':>10} {'p99':>6} | errors"
    )
    for rate in args.rates:
        rows: list[dict[str, float]] = []
        for n in range(1, args.passes + 1):
            each = rate / max(1, len(names) - 1)  # the crewline server takes ``rate`` in all
            shares = dict(zip(names, drive(pool, [targets[t] for t in names], each, args), strict=True))
            row = {f"{t} {q}": pct(shares[t][0], v) for t in names for q, v in (("p50", 0.5), ("p99", 0.99))}
            rows.append(row)
            d50, d99 = row["direct p50"], row["direct p99"]
            cells = [f"{rate:>7g} {n:>4} {d50:>10.2f} {d99:>6.2f}"]
            for t, w in (("crewline", 13), ("crewline$", 14)):
                if t in names:
                    cells.append(f"{row[f'{t} p50'] - d50:>{w}.2f} {row[f'{t} p99'] - d99:>6.2f}")
            if "crewline$" in names:
                cells.append(
                    f"{row['crewline$ p50'] - row['crewline p50']:>10.2f} "
                    f"{row['crewline$ p99'] - row['crewline p99']:>6.2f}"
                )
            errs = {t: _errors(shares[t][1]) for t in names if shares[t][1]}
            cells.append(", ".join(f"{t}: {e}" for t, e in errs.items()) or "0")
            print(" | ".join(cells), flush=True)
            time.sleep(1.0)  # let the last pass's stragglers and background writes settle
        _spread(rate, rows, names)


def _spread(rate: float, rows: list[dict[str, float]], names: list[str]) -> None:
    """Across a rate's passes: min / median / max of what each crewline target adds, and how many passes
    kept the goal (+p99 <= 5 ms)."""
    series = {
        f"{t} +{q}": [r[f"{t} {q}"] - r[f"direct {q}"] for r in rows]
        for t in names[1:]
        for q in ("p50", "p99")
    }
    if "crewline$" in names:
        for q in ("p50", "p99"):
            series[f"$ adds {q}"] = [r[f"crewline$ {q}"] - r[f"crewline {q}"] for r in rows]
    print(f"{'':>7} spread over {len(rows)} passes at {rate:g}/s (min / median / max):")
    for label, values in series.items():
        kept = sum(v <= 5.0 for v in values) if label.endswith("+p99") else None
        print(
            f"{'':>9}{label:>16} {min(values):7.2f} {statistics.median(values):7.2f} {max(values):7.2f}"
            + ("" if kept is None else f"   <= 5 ms in {kept} of {len(values)}")
        )


def main(args: argparse.Namespace) -> None:
    scratch = Path(tempfile.mkdtemp(prefix="crewline-bench-proxy-"))
    fake, fake_url = start_fake()
    procs: list[subprocess.Popen[str]] = [fake]
    pool = ProcessPoolExecutor(args.clients, mp_context=multiprocessing.get_context("spawn"))
    try:
        crew, crew_url, key, limited = start_crewline(fake_url, scratch, args.budget)
        procs.append(crew)
        targets: dict[str, Target] = {
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
        if args.passes:
            passes(pool, targets, args)
        else:
            sweep(pool, targets, args)
        print(f"\nstreaming time to first body byte (sequential, median of {args.ttfb}, before the runs):")
        for name, ms in first.items():
            print(f"  {name:>9} {ms:7.2f} ms  (+{ms - first['direct']:.2f})")
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
    parser.add_argument(
        "--passes",
        type=int,
        default=0,
        help="instead of the sweep: this many passes per rate, each driving direct and both crewline keys "
        "together (per-pass and spread of what the budget adds)",
    )
    parser.add_argument("--no-litellm", action="store_true", help="measure crewline only")
    ns = parser.parse_args()
    if ns.budget == "none":
        ns.budget = None
    main(ns)
