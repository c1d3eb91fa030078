"""Console benchmark: how long each console page takes server-side with 100,000 runs and 1,000,000 steps.

Builds (once, cached under ``bench/.data/``) a SQLite database through the schema the migrations create:
``--runs`` runs of eight workflows in a realistic mix of states over 30 days, ``--steps`` steps among them
(one run holds ``--big-run`` steps by itself, the rest about ten each; model calls with tokens and costs
on the ``llm`` steps, review requests on the approval steps, memory searches, large outputs now and then),
memory items with their versions, prompt versions, alert history and API keys, and the hourly rollups
of the model calls (which a running server's worker keeps up to date). The rows are written with
straight SQL (a benchmark's fixture, not how crewline writes); opening the cached file runs the
migrations, so an index added since is built on it.

Then it serves the app in-process (the ASGI app called through httpx, no socket), signs in to the
console with an admin key, and times every console page: p50 and p95 over ``--repeat`` requests after
a warm-up. Beside each page, the same information fetched through the JSON API (``/api/v1/...``, the
reference) is timed the same way. A page that does not exist (yet) is shown as such.

    python bench/console.py                      # build (about a minute the first time) and time
    python bench/console.py --repeat 50 --only runs
    python bench/console.py --runs 10000 --steps 100000 --big-run 2000   # a smaller data set

The goal: every page under 100 ms p95 server-side; a run with 10,000 steps pages its
timeline instead of loading it whole.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import random
import re
import sqlite3
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from crewline import App, Settings
from crewline.models.call_log import roll_up
from crewline.server import create_app
from crewline.server.keys import create_key
from crewline.store import open_database

DAY = 86400.0
DATA = Path(__file__).resolve().parent / ".data"
WORKFLOWS = [
    "triage-email",
    "draft-reply",
    "invoice-chase",
    "lead-enrich",
    "weekly-report",
    "support-agent",
    "content-post",
    "crm-sync",
]
MODELS = [
    "openai/gpt-4o-mini",
    "openai/gpt-4o",
    "anthropic/claude-haiku",
    "anthropic/claude-sonnet",
    "local/smollm2",
]
PRICE = {"gpt-4o-mini": 0.15, "gpt-4o": 2.5, "claude-haiku": 0.8, "claude-sonnet": 3.0, "smollm2": 0.0}
STATES = ["completed", "failed", "waiting", "pending", "running", "paused", "cancelled"]
STATE_WEIGHTS = [86, 5, 3, 2, 1, 1, 2]
KINDS = ["step", "llm", "tool", "checkpoint", "sleep", "event"]
KIND_WEIGHTS = [45, 27, 15, 6, 4, 3]
WORDS = [
    "invoice",
    "refund",
    "order",
    "shipping",
    "delay",
    "customer",
    "renewal",
    "contract",
    "quote",
    "meeting",
    "follow-up",
    "urgent",
]
SCOPES = [f"customer:{c}" for c in range(40)] + ["global", "kb:support", "kb:sales"]


@dataclass
class Sizes:
    runs: int
    steps: int
    big_run: int

    @property
    def file(self) -> Path:
        return DATA / f"console-{self.runs}-{self.steps}-{self.big_run}.db"


# -- building the data set --------------------------------------------------------------------------------


@dataclass
class Built:
    big_run: str  # the run with --big-run steps
    sample_run: str  # a finished run of ordinary size
    review: str  # a pending review
    workflow: str


def _run_id(i: int) -> str:
    return hashlib.sha256(f"run{i}".encode()).hexdigest()[:24]


def _step_counts(rng: random.Random, sizes: Sizes) -> list[int]:
    """Steps per run (run 0 is the big one), summing to exactly ``sizes.steps``."""
    rest = sizes.steps - sizes.big_run
    avg = rest / max(1, sizes.runs - 1)
    counts = [sizes.big_run] + [
        max(1, round(rng.lognormvariate(0, 0.6) * avg * 0.85)) for _ in range(sizes.runs - 1)
    ]
    diff = sizes.steps - sum(counts)
    while diff != 0:
        i = rng.randrange(1, sizes.runs)
        if diff > 0:
            counts[i] += 1
            diff -= 1
        elif counts[i] > 1:
            counts[i] -= 1
            diff += 1
    return counts


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


class _Writer:
    """Rows for one run at a time, appended to per-table batches that are flushed with executemany."""

    def __init__(self, raw: sqlite3.Connection, rng: random.Random, now: float) -> None:
        self.raw, self.rng, self.now = raw, rng, now
        self.batches: dict[str, list[tuple[object, ...]]] = {k: [] for k in _SQL}

    def add(self, table: str, row: tuple[object, ...]) -> None:
        batch = self.batches[table]
        batch.append(row)
        if len(batch) >= 50_000:
            self.flush(table)

    def flush(self, table: str | None = None) -> None:
        for name in [table] if table else list(self.batches):
            self.raw.executemany(_SQL[name], self.batches[name])
            self.batches[name] = []

    def run(self, i: int, steps: int) -> str:
        rng = self.rng
        rid = _run_id(i)
        workflow = WORKFLOWS[i % len(WORKFLOWS)] if i else "support-agent"
        state = "completed" if i == 0 else rng.choices(STATES, STATE_WEIGHTS)[0]
        # Newer runs more often than old ones; a few hundred today.
        created = self.now - min(30 * DAY, rng.expovariate(1 / (6 * DAY)))
        at = created
        for n in range(1, steps + 1):
            at = self.step(rid, workflow, n, at, last=n == steps, state=state)
        finished = at if state in ("completed", "failed", "cancelled") else None
        customer = f"customer-{rng.randrange(5000)}"
        inp = json.dumps(
            {"customer": customer, "subject": _text(rng, 6), "body": _text(rng, rng.randrange(5, 60))}
        )
        out = json.dumps({"reply": _text(rng, 20), "sent": True}) if state == "completed" else None
        err = json.dumps({"type": "ToolError", "message": "upstream said 502"}) if state == "failed" else None
        wait = "review" if state == "waiting" else None
        self.add(
            "runs",
            (rid, workflow, "v3", "default", state, inp, out, err, wait, created, at, finished, "k-operator"),
        )
        return rid

    def step(self, rid: str, workflow: str, n: int, at: float, *, last: bool, state: str) -> float:
        rng = self.rng
        kind = "approval" if last and state == "waiting" else rng.choices(KINDS, KIND_WEIGHTS)[0]
        status = "done"
        error = None
        if last and state == "failed":
            status, error = "failed", json.dumps({"type": "ToolError", "message": "upstream said 502"})
        elif kind == "approval":
            status = "waiting"
        duration = rng.lognormvariate(-1.5, 1.2) if kind != "llm" else rng.lognormvariate(0, 0.5)
        big = rng.random() < 0.02
        out = json.dumps({"text": _text(rng, 500 if big else rng.randrange(1, 12)), "n": n})
        inp = json.dumps({"prompt": _text(rng, 8)}) if kind in ("llm", "tool") else None
        name = {"llm": "draft", "tool": "crm.update", "checkpoint": "drafted", "sleep": "cool-off"}.get(
            kind, "fetch"
        )
        if kind == "step" and rng.random() < 0.1:
            name = "memory.search"
            self.add(
                "memory_searches", (at, rng.choice(SCOPES), 5, rng.choice([0, 3, 5]), rng.random(), rid, n)
            )
        done = at + duration
        self.add(
            "steps",
            (
                rid,
                n,
                f"{name}",
                kind,
                "read",
                status,
                inp,
                out if status == "done" else None,
                error,
                1,
                at,
                done,
            ),
        )
        if kind == "llm":
            self.call(rid, workflow, n, at, duration)
        if kind == "approval":
            self.add("reviews", (f"rv-{rid}-{n}", rid, n, "send reply", "pending", None, None, at))
        elif kind == "tool" and rng.random() < 0.1:
            decided = rng.choice(["approved", "rejected", "edited"])
            self.add("reviews", (f"rv-{rid}-{n}", rid, n, "update CRM", decided, "k-reviewer", at + 600, at))
        return done

    def call(self, rid: str, workflow: str, n: int, at: float, seconds: float) -> None:
        rng = self.rng
        requested = rng.choice(MODELS)
        provider, _, model = requested.partition("/")
        tokens_in, tokens_out = rng.randrange(200, 6000), rng.randrange(20, 800)
        cost = (tokens_in + 4 * tokens_out) * PRICE[model] / 1e6
        failed = rng.random() < 0.03
        day = datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d")
        self.add(
            "model_calls",
            (
                at,
                day,
                rid,
                n,
                workflow,
                requested,
                provider,
                model,
                "error" if failed else "ok",
                "RateLimited" if failed else None,
                tokens_in,
                tokens_out,
                cost,
                seconds * 1000,
            ),
        )


_SQL = {
    "runs": "INSERT INTO runs (id, workflow, version, queue, status, input, output, error, wait_reason, created_at, "
    "updated_at, finished_at, started_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    "steps": "INSERT INTO steps (run_id, step_no, name, kind, effect, status, input, output, error, attempts, "
    "started_at, finished_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    "model_calls": "INSERT INTO model_calls (started_at, day, run_id, step, workflow, requested, kind, provider, model, "
    "status, error_class, input_tokens, output_tokens, cost, latency_ms) "
    "VALUES (?, ?, ?, ?, ?, ?, 'complete', ?, ?, ?, ?, ?, ?, ?, ?)",
    "reviews": "INSERT INTO reviews (id, run_id, step_no, kind, action, risk, preview, status, on_timeout, "
    "decided_by, decided_at, created_at, context) "
    "VALUES (?, ?, ?, 'approval', ?, 'medium', '\"Dear customer, ...\"', ?, 'reject', ?, ?, ?, "
    '\'{"steps_so_far": 3, "used": []}\')',
    "memory_searches": "INSERT INTO memory_searches (at, scopes, k, hits, top_score, run_id, step) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)",
}


def build(sizes: Sizes, seed: int = 13) -> None:
    """Create the database file for ``sizes`` (schema by the migrations, rows by straight SQL)."""
    DATA.mkdir(exist_ok=True)
    part = sizes.file.with_suffix(".part")
    for leftover in DATA.glob(part.name + "*"):
        leftover.unlink()
    open_database(f"sqlite:///{part}").close()
    raw = sqlite3.connect(part, isolation_level=None)
    raw.execute("PRAGMA synchronous=OFF")
    raw.execute("BEGIN")
    rng = random.Random(seed)
    now = time.time()
    writer = _Writer(raw, rng, now)
    for i, steps in enumerate(_step_counts(rng, sizes)):
        writer.run(i, steps)
    writer.flush()
    _fill_rest(raw, rng, now)
    raw.execute("COMMIT")
    raw.close()
    # What the worker's chores keep up to date in a running deployment: the hourly rollups of model calls.
    db = open_database(f"sqlite:///{part}")
    try:
        roll_up(db, now=now)
    finally:
        db.close()
    part.rename(sizes.file)


def _fill_rest(raw: sqlite3.Connection, rng: random.Random, now: float) -> None:
    """Memory items and their versions, prompts, alert history."""
    items = []
    versions = []
    for rid in range(1, 20_001):
        scope = rng.choice(SCOPES)
        text = _text(rng, rng.randrange(8, 80))
        at = now - rng.random() * 30 * DAY
        h = hashlib.sha256(text.encode()).hexdigest()
        items.append((rid, f"m{rid}", scope, "fact", text, h, 1, "bench", at, at))
        versions.append(("item", f"m{rid}", scope, 1, "put", json.dumps({"text": text}), "bench", at))
    raw.executemany(
        "INSERT INTO memory_items (rid, id, scope, kind, text, content_hash, version, author, created_at, "
        "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        items,
    )
    raw.executemany(
        "INSERT INTO memory_versions (entity, entity_id, scope, version, op, state, author, at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        versions,
    )
    for p in range(10):
        for v in range(5):
            body = f"You are a helpful assistant for {WORKFLOWS[p % 8]} (v{v}). {_text(rng, 40)}"
            version = hashlib.sha256(body.encode()).hexdigest()[:12]
            raw.execute(
                "INSERT INTO prompt_versions (name, version, body, metadata, source, created_at) "
                "VALUES (?, ?, ?, '{}', ?, ?)",
                (f"prompt-{p}", version, body, body, now - (5 - v) * DAY),
            )
        raw.execute(
            "INSERT INTO prompt_labels (name, label, version, updated_at) VALUES (?, 'production', ?, ?)",
            (f"prompt-{p}", version, now),
        )
    raw.executemany(
        "INSERT INTO alert_history (rule, state, at, summary, value, threshold) VALUES (?, ?, ?, ?, ?, ?)",
        [
            (
                f"rule-{i % 6}",
                "firing" if i % 2 == 0 else "resolved",
                now - i * 3600,
                "error rate above 5%",
                0.07,
                0.05,
            )
            for i in range(2000)
        ],
    )


# -- timing ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Page:
    name: str
    console: str | None  # path of the console page
    api: str | None  # path of the JSON API answer with the same information


PAGES = [
    Page("overview", "/", "/api/v1/stats?since=24h"),
    Page("overview charts", "/overview/charts", "/api/v1/stats?since=7d&by=hour"),
    Page("runs", "/runs", "/api/v1/runs"),
    Page("runs: failed", "/runs?state=failed", "/api/v1/runs?state=failed"),
    Page("runs: workflow", "/runs?workflow={workflow}", "/api/v1/runs?workflow={workflow}"),
    Page("runs: wf+state+7d", "/runs?workflow={workflow}&state=waiting&since=7d", None),
    Page("runs: search", "/runs?q=renewal", None),
    Page("runs: search+30d", "/runs?q=renewal+contract&since=30d&state=failed", None),
    Page("runs: page 2", "{next_page}", "{next_api_page}"),
    Page("run detail", "/runs/{run}", "/api/v1/runs/{run}"),
    Page("run, 10k steps", "/runs/{big}", "/api/v1/runs/{big}"),
    Page("run, 10k, p. 26", "/runs/{big}?after=5000", None),
    Page("costs", "/costs", "/api/v1/spend"),
    Page("costs, 30 days", "/costs?days=30", "/api/v1/spend?days=30"),
    Page("reviews", "/reviews", "/api/v1/reviews"),
    Page("review", "/reviews/{review}", "/api/v1/reviews/{review}"),
    Page("reviews decided", "/reviews?decided=1", None),
    Page("prompts", "/prompts", None),
    Page("prompt", "/prompts/prompt-3", None),
    Page("memory", "/memory", None),
    Page("memory search", "/memory?q=renewal+contract", None),
    Page("memory scope", "/memory/scope/kb%3Asupport", None),
    Page("memory item", "/memory/item/m77", None),
    Page("alerts", "/alerts", None),
    Page("keys", "/keys", "/api/v1/keys"),
]


@dataclass
class Timing:
    status: int
    p50: float
    p95: float
    size: int


async def _time(client: httpx.AsyncClient, path: str, repeat: int, headers: dict[str, str]) -> Timing:
    first = await client.get(path, headers=headers)
    if first.status_code != 200:
        return Timing(first.status_code, 0.0, 0.0, 0)
    for _ in range(2):
        await client.get(path, headers=headers)
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        response = await client.get(path, headers=headers)
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    p95 = samples[min(len(samples) - 1, round(0.95 * (len(samples) - 1)))]
    return Timing(response.status_code, statistics.median(samples), p95, len(response.content))


async def sign_in(client: httpx.AsyncClient, token: str) -> None:
    """Sign in as the console's form does: read the form's CSRF field, post the key, keep the cookie."""
    form = await client.get("/login")
    fields = {"key": token}
    found = re.search(r'name="csrf"[^>]*value="([^"]+)"', form.text)
    if found:
        fields["csrf"] = found.group(1)
    await client.post("/login", data=fields)


def _next_links(page: str) -> str | None:
    found = re.search(r'href="(/runs\?[^"]*(?:cursor|after)=[^"]+)"', page)
    return found.group(1).replace("&amp;", "&") if found else None


async def measure(
    sizes: Sizes, built: Built, repeat: int, only: str | None
) -> list[tuple[Page, Timing | None, Timing | None]]:
    settings = Settings(database_url=f"sqlite:///{sizes.file}", project_dir=DATA)
    app = App(settings=settings)
    for name in WORKFLOWS:  # registered, as in the project that made the runs (the pages offer them)
        app.workflow(name)(_workflow)
    api = create_app(app, workers=0)
    tokens = app.db.run(lambda conn: [create_key(conn, scope="admin", name="bench")[1] for _ in range(2)])
    transport = httpx.ASGITransport(app=api)
    rows: list[tuple[Page, Timing | None, Timing | None]] = []
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1", timeout=120) as client:
            await sign_in(client, tokens[0])
            bearer = {"Authorization": f"Bearer {tokens[1]}"}
            first = await client.get("/api/v1/runs", headers=bearer)
            cursor = first.json().get("next_cursor") if first.status_code == 200 else None
            runs_page = await client.get("/runs")
            values = {
                "run": built.sample_run,
                "big": built.big_run,
                "review": built.review,
                "workflow": built.workflow,
                "next_page": _next_links(runs_page.text) if runs_page.status_code == 200 else None,
                "next_api_page": f"/api/v1/runs?cursor={cursor}" if cursor else None,
            }
            for page in PAGES:
                if only and only not in page.name:
                    continue
                console = _fill(page.console, values)
                reference = _fill(page.api, values)
                ours = await _time(client, console, repeat, {}) if console else None
                theirs = await _time(client, reference, repeat, bearer) if reference else None
                rows.append((page, ours, theirs))
    finally:
        await app.aclose()
    return rows


async def _workflow(ctx: Any) -> None:
    """Stands for the project's workflows; the benchmark never runs one."""


def _fill(path: str | None, values: dict[str, str | None]) -> str | None:
    if path is None:
        return None
    names = re.findall(r"\{(\w+)\}", path)
    if any(values.get(n) is None for n in names):
        return None  # e.g. no second page to link to
    return path.format(**values)


def find_built(sizes: Sizes) -> Built:
    """The runs the pages show, read back from the cached file."""
    raw = sqlite3.connect(sizes.file)
    try:
        sample = raw.execute(
            "SELECT run_id FROM steps WHERE run_id IN (SELECT id FROM runs WHERE status = 'completed' "
            "ORDER BY created_at DESC LIMIT 50) GROUP BY run_id HAVING COUNT(*) BETWEEN 8 AND 20 LIMIT 1"
        ).fetchone()[0]
        review = raw.execute("SELECT id FROM reviews WHERE status = 'pending' LIMIT 1").fetchone()[0]
    finally:
        raw.close()
    return Built(big_run=_run_id(0), sample_run=sample, review=review, workflow="invoice-chase")


def machine() -> str:
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    cpu = platform.processor() or platform.machine()
    return f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, load average {load}"


def _cell(t: Timing | None) -> str:
    if t is None:
        return f"{'-':>8} {'-':>8} {'':>9}"
    if t.status != 200:
        return f"{'HTTP ' + str(t.status):>17} {'':>9}"
    return f"{t.p50:8.1f} {t.p95:8.1f} {t.size / 1024:8.0f}k"


def report(
    sizes: Sizes, rows: list[tuple[Page, Timing | None, Timing | None]], build_s: float | None
) -> None:
    print(f"\ncrewline console over {sizes.runs:,} runs and {sizes.steps:,} steps on SQLite")
    print(f"machine: {machine()}")
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    if build_s is not None:
        print(f"data set built in {build_s:.0f} s ({sizes.file.stat().st_size / 2**20:.0f} MiB)")
    print("times in ms, server-side (in-process ASGI, no socket); '-' none; HTTP n: not 200\n")
    print(f"{'':<18} {'console page':^27} | {'JSON API (reference)':^27}")
    print(f"{'page':<18} {'p50':>8} {'p95':>8} {'size':>9} | {'p50':>8} {'p95':>8} {'size':>9}")
    for page, ours, theirs in rows:
        flag = "  over 100 ms" if ours and ours.status == 200 and ours.p95 > 100 else ""
        print(f"{page.name:<18} {_cell(ours)} | {_cell(theirs)}{flag}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--big-run", type=int, default=10_000, help="steps of the one long run")
    parser.add_argument("--repeat", type=int, default=30, help="timed requests per page")
    parser.add_argument("--only", help="time only the pages whose name contains this")
    parser.add_argument("--rebuild", action="store_true", help="build the data set again")
    args = parser.parse_args()
    sizes = Sizes(args.runs, args.steps, args.big_run)
    build_s = None
    if args.rebuild or not sizes.file.exists():
        start = time.perf_counter()
        build(sizes)
        build_s = time.perf_counter() - start
    built = find_built(sizes)
    rows = asyncio.run(measure(sizes, built, args.repeat, args.only))
    report(sizes, rows, build_s)


if __name__ == "__main__":
    main()
