"""What the gateway adds over a bare HTTP call, and what a cache hit costs.

    .venv/bin/python bench/gateway.py [--calls 2000] [--database sqlite|postgresql://...] [--observe]

Starts the fake provider in its own process (so it does not share this interpreter's GIL), then times,
one call at a time after a warm-up, the paths taking turns in blocks:

- bare httpx: ``AsyncClient.post`` of an OpenAI chat request to the fake, JSON decoded;
- bare client: the same request through crewline's own HTTP client (``crewline.models.http``, what the
  gateway's adapters use), JSON decoded;
- ``gateway.complete`` with an RPM limit, prices, budget tracking and call records on (records and
  settlement group-committed in the background, as by default);
- the same with a *limited* budget in scope, so every call also waits for its reservation to commit;
- a cache hit (temperature 0, same request);
- the gateway's own cost without any network: an in-process scripted model called directly, and through
  ``gateway.complete`` (records and budget tracking on).

With ``--observe``, the two gateway paths also run with the Prometheus metrics observing every call
(``crewline.observe.metrics``), in the same blocks, so observability's cost reads side by side.

Prints p50/p99 of each and the added cost over bare httpx (the issue's yardstick) and over the bare
crewline client (the gateway's own layers: routing, limits, ledger, records). Numbers, never assertions.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from crewline.models import Gateway, ModelRequest, ModelsConfig, user
from crewline.models.call_log import CallRecord, model_call_event
from crewline.models.http import HttpClient
from crewline.observe import Observers
from crewline.observe.metrics import Metrics
from crewline.store import open_database
from crewline.testing import ScriptedModel

BODY = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "Classify: my invoice is wrong"}],
    "max_tokens": 50,
}


def start_fake() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-m", "crewline.testing"], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


async def blocks(
    paths: dict[str, Callable[[], Awaitable[Any]]],
    calls: int,
    settle: Callable[[], Awaitable[None]],
    rounds: int = 10,
    warmup: int = 200,
) -> dict[str, list[float]]:
    """Time each path ``calls`` times, in ``rounds`` blocks taking turns, so slow drifts in machine load hit
    every path alike; after each block the background record writes are waited for, so a path pays for
    its own writes and not for another's."""
    for fn in paths.values():
        for _ in range(warmup):
            await fn()
        await settle()
    out: dict[str, list[float]] = {name: [] for name in paths}
    per_round = max(1, calls // rounds)
    for _ in range(rounds):
        for name, fn in paths.items():
            for _ in range(per_round):
                start = time.perf_counter()
                await fn()
                out[name].append((time.perf_counter() - start) * 1000)
            await settle()
    return out


def pct(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def config(url: str, limited: bool) -> ModelsConfig:
    return ModelsConfig.parse(
        {
            "providers": {"fake": {"format": "openai", "base_url": url + "/v1", "api_key_env": "BENCH_KEY"}},
            "deployments": {"main": {"provider": "fake", "model": "gpt-4o-mini", "rpm": 10_000_000}},
            "prices": {"fake/gpt-4o-mini": {"input": 0.15, "output": 0.6}},
            "budgets": {"workflow": {"bench": 1_000_000.0}} if limited else {},
        }
    )


async def run(url: str, database: str, calls: int, observe: bool = False) -> dict[str, list[float]]:
    db = open_database(database)
    env = {"BENCH_KEY": "sk-bench"}
    scope = {"workflow": "bench"}
    client = httpx.AsyncClient()
    own = HttpClient()
    payload = json.dumps(BODY).encode()
    own_headers = {"authorization": "Bearer sk-bench", "content-type": "application/json"}
    plain = Gateway(config(url, False), db, environ=env)
    limited = Gateway(config(url, True), db, environ=env)
    scripted = ScriptedModel(default="a short reply")
    offline = Gateway(ModelsConfig(default="test/m"), db, adapters={"test": scripted})
    hub = Observers([Metrics()])

    def call_observer(_: Observers) -> Callable[[CallRecord], None]:
        return lambda record: hub.emit(model_call_event(record))  # what App.observe_call does

    watched = Gateway(config(url, False), db, environ=env, on_call=call_observer(hub))
    watched_offline = Gateway(
        ModelsConfig(default="test/m"), db, adapters={"test": scripted}, on_call=call_observer(hub)
    )
    await plain.complete("main", "cached question", temperature=0)
    await plain.flush()
    request = ModelRequest("test/m", (user("Classify: my invoice is wrong"),), max_tokens=50)

    async def bare() -> None:
        resp = await client.post(
            url + "/v1/chat/completions", json=BODY, headers={"authorization": "Bearer sk-bench"}
        )
        resp.json()

    async def bare_own() -> None:
        reply = await own.request("POST", url + "/v1/chat/completions", body=payload, headers=own_headers)
        json.loads(reply.content)

    async def complete() -> None:
        await plain.complete("main", BODY["messages"], max_tokens=50, budget_scope=scope)

    async def complete_limited() -> None:
        await limited.complete("main", BODY["messages"], max_tokens=50, budget_scope=scope)

    async def hit() -> None:
        assert (await plain.complete("main", "cached question", temperature=0)).cached

    async def adapter_alone() -> None:
        await scripted.complete(request, "m")

    async def gateway_offline() -> None:
        await offline.complete("test/m", "Classify: my invoice is wrong", max_tokens=50, budget_scope=scope)

    async def complete_watched() -> None:
        await watched.complete("main", BODY["messages"], max_tokens=50, budget_scope=scope)

    async def offline_watched() -> None:
        await watched_offline.complete(
            "test/m", "Classify: my invoice is wrong", max_tokens=50, budget_scope=scope
        )

    gateways = (plain, limited, offline, watched, watched_offline)

    async def settle() -> None:
        for gw in gateways:
            await gw.flush()

    paths = {
        "bare httpx": bare,
        "bare client": bare_own,
        "gateway.complete": complete,
        "gateway.complete, limited budget": complete_limited,
        "cache hit": hit,
        "in-process model alone": adapter_alone,
        "gateway over it": gateway_offline,
    }
    if observe:
        paths["gateway.complete, metrics on"] = complete_watched
        paths["gateway over it, metrics on"] = offline_watched
    results = await blocks(paths, calls, settle)
    for gw in gateways:
        await gw.aclose()
    await client.aclose()
    await own.aclose()
    db.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--database", default=None, help="database URL (default: a temporary SQLite file)")
    parser.add_argument("--observe", action="store_true", help="also time the gateway with metrics on")
    args = parser.parse_args()
    proc, url = start_fake()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            database = args.database or f"sqlite:///{Path(tmp) / 'bench.db'}"
            results = asyncio.run(run(url, database, args.calls, args.observe))
    finally:
        proc.terminate()
        proc.wait()
    print(f"{args.calls} sequential calls each, fake upstream at {url}, database {database.split(':')[0]}")
    print(
        f"{'path':<36}{'p50 ms':>9}{'p99 ms':>9}{'mean ms':>9}"
        f"{'+p50 httpx':>12}{'+p99 httpx':>12}{'+p50 own':>10}{'+p99 own':>10}"
    )
    for name, samples in results.items():
        p50, p99 = pct(samples, 50), pct(samples, 99)
        line = f"{name:<36}{p50:>9.3f}{p99:>9.3f}{statistics.fmean(samples):>9.3f}"
        if name.startswith("gateway over it"):
            base = results["in-process model alone"]
            line += " " * 24 + f"{p50 - pct(base, 50):>+10.3f}{p99 - pct(base, 99):>+10.3f}"
        elif name.startswith("gateway.complete"):
            for base in (results["bare httpx"], results["bare client"]):
                width = 12 if base is results["bare httpx"] else 10
                line += f"{p50 - pct(base, 50):>+{width}.3f}{p99 - pct(base, 99):>+{width}.3f}"
        print(line)
    for on, off in (
        ("gateway.complete, metrics on", "gateway.complete"),
        ("gateway over it, metrics on", "gateway over it"),
    ):
        if on in results:
            p_on, p_off = pct(results[on], 50), pct(results[off], 50)
            print(
                f"metrics on vs off, {off}: p50 {p_on:.3f} vs {p_off:.3f} ms ({(p_on / p_off - 1) * 100:+.1f}%)"
            )


if __name__ == "__main__":
    main()
