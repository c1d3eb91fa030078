"""Latency the crewline proxy adds over calling the upstream directly, at fixed arrival rates.

    .venv/bin/python bench/proxy.py [--rates 50,100,200,300] [--seconds 5] [--litellm]

Starts, each in its own process: the fake provider (``python -m crewline.testing``), ``crewline serve
--no-workers`` on a scratch SQLite database with the gateway pointed at the fake (prices, budget ledger
with a daily key budget, and call records on), and with ``--litellm`` the LiteLLM proxy (one worker, no
database) on the same fake, if ``litellm`` is installed in this environment (it is never a dependency).

Open loop: requests are sent on a fixed schedule (``rate`` per second for ``seconds``), each on its own
task, whether or not earlier ones have answered, so a slow server meets a growing queue instead of a
politely waiting client. Direct, crewline and LiteLLM phases alternate per rate. Prints client-observed
p50/p99 per target, the added p50/p99 over direct, errors, and streaming time to first byte (sequential).
The client shares the machine's cores with the servers: figures are comparative, never assertions.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

BODY = {
    "model": "gpt-test",
    "messages": [{"role": "user", "content": "Classify: my invoice is wrong"}],
    "max_tokens": 20,
}


def start_fake() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-m", "crewline.testing"], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def start_crewline(
    fake_url: str, scratch: Path, budget: str | None
) -> tuple[subprocess.Popen[str], str, str]:
    (scratch / "crewline.toml").write_text(
        f"""[models]
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
    args_budget = [] if budget is None else ["--budget", budget]
    key = subprocess.run(
        [*cli, "keys", "create", "--scope", "proxy", *args_budget],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    proc = subprocess.Popen(
        [*cli, "serve", "--no-workers", "--port", "0"], env=env, stderr=subprocess.PIPE, text=True
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        found = re.search(r"listening on (http://\S+)", line)
        if found:
            threading_drain(proc)
            return proc, found.group(1), key
    raise SystemExit("crewline serve did not start")


def threading_drain(proc: subprocess.Popen[str]) -> None:
    import threading

    def drain() -> None:
        assert proc.stderr is not None
        for _ in proc.stderr:
            pass

    threading.Thread(target=drain, daemon=True).start()


def start_litellm(fake_url: str, scratch: Path) -> tuple[subprocess.Popen[str], str] | None:
    exe = shutil.which("litellm") or str(Path(sys.executable).with_name("litellm"))
    if not Path(exe).exists():
        return None
    port = _free_port()
    (scratch / "litellm.yaml").write_text(
        "model_list:\n  - model_name: gpt-test\n    litellm_params:\n      model: openai/gpt-test\n"
        f"      api_base: {fake_url}/v1\n      api_key: sk-bench\n"
    )
    proc = subprocess.Popen(
        [exe, "--config", str(scratch / "litellm.yaml"), "--port", str(port), "--num_workers", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    return proc, f"http://127.0.0.1:{port}"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_ready(
    client: httpx.AsyncClient, url: str, headers: dict[str, str], timeout: float = 120
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            r = await client.post(f"{url}/v1/chat/completions", json=BODY, headers=headers)
            if r.status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"{url} did not become ready")
        await asyncio.sleep(0.2)


async def open_loop(
    client: httpx.AsyncClient, url: str, headers: dict[str, str], rate: float, seconds: float
) -> tuple[list[float], int]:
    latencies: list[float] = []
    errors = 0

    async def one() -> None:
        nonlocal errors
        start = time.perf_counter()
        try:
            r = await client.post(f"{url}/v1/chat/completions", json=BODY, headers=headers)
            r.raise_for_status()
            latencies.append((time.perf_counter() - start) * 1000)
        except httpx.HTTPError:
            errors += 1

    tasks = []
    t0 = time.perf_counter()
    for i in range(int(rate * seconds)):
        delay = t0 + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one()))
    await asyncio.gather(*tasks)
    return latencies, errors


async def ttfb(client: httpx.AsyncClient, url: str, headers: dict[str, str], n: int = 200) -> float:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        async with client.stream(
            "POST", f"{url}/v1/chat/completions", json={**BODY, "stream": True}, headers=headers
        ) as r:
            first: float | None = None
            async for _ in r.aiter_raw():  # read it all, so the connection goes back to the pool
                if first is None:
                    first = (time.perf_counter() - start) * 1000
            assert first is not None
            times.append(first)
    return statistics.median(times)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main(args: argparse.Namespace) -> None:
    scratch = Path(tempfile.mkdtemp(prefix="crewline-bench-proxy-"))
    fake, fake_url = start_fake()
    procs: list[subprocess.Popen[str]] = [fake]
    try:
        crew, crew_url, key = start_crewline(fake_url, scratch, args.budget)
        procs.append(crew)
        targets: dict[str, tuple[str, dict[str, str]]] = {
            "direct": (fake_url, {"Authorization": "Bearer sk-bench"}),
            "crewline": (crew_url, {"Authorization": f"Bearer {key}"}),
        }
        if args.litellm:
            started = start_litellm(fake_url, scratch)
            if started is None:
                print("litellm: not installed in this environment; skipped (pip install 'litellm[proxy]')")
            else:
                procs.append(started[0])
                targets["litellm"] = (started[1], {"Authorization": "Bearer sk-bench"})
        limits = httpx.Limits(max_connections=2000, max_keepalive_connections=500)
        async with httpx.AsyncClient(timeout=30, limits=limits) as client:
            for url, headers in targets.values():
                await wait_ready(client, url, headers)
                for _ in range(200):  # warm-up
                    await client.post(f"{url}/v1/chat/completions", json=BODY, headers=headers)
            print(
                f"{'rate/s':>7} {'target':>9} {'p50 ms':>8} {'p99 ms':>8} {'+p50':>7} {'+p99':>7} {'errors':>6}"
            )
            for rate in args.rates:
                base: tuple[float, float] | None = None
                for name, (url, headers) in targets.items():
                    lat, errors = await open_loop(client, url, headers, rate, args.seconds)
                    p50, p99 = pct(lat, 0.5), pct(lat, 0.99)
                    if name == "direct":
                        base = (p50, p99)
                    added = (p50 - base[0], p99 - base[1]) if base else (0.0, 0.0)
                    print(
                        f"{rate:>7g} {name:>9} {p50:>8.2f} {p99:>8.2f} {added[0]:>7.2f} {added[1]:>7.2f} {errors:>6}",
                        flush=True,
                    )
            print("\nstreaming time to first byte (sequential, median):")
            first = {name: await ttfb(client, url, headers) for name, (url, headers) in targets.items()}
            for name, ms in first.items():
                print(f"  {name:>9} {ms:7.2f} ms  (+{ms - first['direct']:.2f})")
    finally:
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
        "--rates", type=lambda s: [float(x) for x in s.split(",")], default=[50, 100, 200, 300]
    )
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument(
        "--budget",
        default=None,
        help="give the proxy key a daily budget, e.g. '$1000/day' (a ledger reservation per call)",
    )
    parser.add_argument("--litellm", action="store_true", help="also measure the LiteLLM proxy, if installed")
    asyncio.run(main(parser.parse_args()))
