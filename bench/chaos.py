"""Chaos benchmark: the whole system — gateway, engine, review queue, server — while everything fails at once.

    python bench/chaos.py                       # 1,000 runs, 4 workers: ~15-30 minutes on 2 cores
    python bench/chaos.py --runs 60 --workers 2 --pg-restarts 1 --kill-every 6

It sets itself up: a PostgreSQL cluster of its own in a temporary directory (initdb/pg_ctl, so restarting
it hurts nobody), the fake provider (``crewline.testing.FakeProvider``, which counts the calls it answers)
with 30% of upstream calls failing (429 with retry-after, 500, timeouts, replies cut off midway), a sink
on loopback that applies each idempotency key once and counts every delivery, one ``crewline serve
--no-workers`` and N ``crewline worker`` processes. Runs of ``chaos_app.chaos`` are started over the API
(a trigger key) and through a signed webhook; a scripted reviewer approves approvals and a scripted
operator settles "outcome unknown" steps by asking the sink whether the key arrived (``done`` with what it
returned, else ``retry``), both through the HTTP API. Meanwhile a random worker is SIGKILLed every few
seconds and a new one started, PostgreSQL is restarted, and the server's database connections are cut with
``pg_terminate_backend``. When the faults stop, the run drains; then the logs, every database table and
the exported traces are scanned for the provider key, the API keys and the webhook secret.

The report (and ``tests/test_chaos.py``, which runs a small configuration) holds the goals: every run
completed; no model call answered twice beyond those in flight at a fault (a finished ``ctx.llm`` is never
paid twice); no duplicated irreversible effect at the sink; no secret anywhere.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import hmac
import itertools
import json
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from tests._pg import Cluster  # noqa: E402

from crewline.testing import FakeProvider, Fault  # noqa: E402

# How long after a provider answered a call a fault can still catch it before its step is recorded (the
# reply's parsing, the step's commit, a busy 2-core machine); a repeat inside it is "in flight at a fault".
IN_FLIGHT = 5.0


@dataclass
class Config:
    runs: int = 1000
    workers: int = 4
    concurrency: int = 16
    kill_every: float = 4.0
    pg_restarts: int = 2
    cut_connection: bool = True
    fault_rate: float = 0.3
    approve_every: int = 3
    lease: float = 2.0
    seed: int = 17
    drain_timeout: float = 1800.0
    workdir: Path | None = None


@dataclass
class Report:
    config: Config
    runs: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    started_twice: int = 0
    upstream_requests: int = 0
    upstream_failed: int = 0
    model_calls_answered: int = 0
    repeated_calls: int = 0
    repeated_in_flight: int = 0
    effects: int = 0
    deliveries: int = 0
    duplicated_effects: int = 0
    approvals_decided: int = 0
    unknown_parked: int = 0
    unknown_resolved: Counter[str] = field(default_factory=Counter)
    failures_retried: int = 0
    cron_fired: int = 0
    cron_doubled: int = 0
    cron_skipped: int = 0
    kills: int = 0
    respawned: int = 0
    pg_restarts: int = 0
    connections_cut: int = 0
    answers_503: int = 0
    chaos_seconds: float = 0.0
    drain_seconds: float = 0.0
    secrets_found: list[str] = field(default_factory=list)
    scanned: Counter[str] = field(default_factory=Counter)
    timeline: list[str] = field(default_factory=list)  # faults and repeated calls, for reading a failure

    @property
    def repeated_beyond_in_flight(self) -> int:
        return self.repeated_calls - self.repeated_in_flight

    def table(self) -> str:
        c = self.config
        rows = [
            ("runs completed", f"{self.statuses['completed']} of {self.runs}", "all"),
            ("runs started twice", str(self.started_twice), "0"),
            ("model calls answered by the provider", str(self.model_calls_answered), ""),
            ("  repeated, in flight at a fault", str(self.repeated_in_flight), ""),
            ("  repeated beyond those", str(self.repeated_beyond_in_flight), "0"),
            (
                "upstream requests / failed by injection",
                f"{self.upstream_requests} / {self.upstream_failed}",
                "",
            ),
            ("irreversible effects / deliveries", f"{self.effects} / {self.deliveries}", ""),
            ("duplicated irreversible effects", str(self.duplicated_effects), "0"),
            ("approvals decided by the reviewer", str(self.approvals_decided), ""),
            ("steps parked as outcome unknown", str(self.unknown_parked), ""),
            (
                "  resolved done / retry",
                f"{self.unknown_resolved['done']} / {self.unknown_resolved['retry']}",
                "",
            ),
            ("failed runs retried by the operator", str(self.failures_retried), ""),
            (
                "cron ticks fired / doubled / skipped",
                f"{self.cron_fired} / {self.cron_doubled} / {self.cron_skipped}",
                "0 doubled",
            ),
            ("workers SIGKILLed and replaced", str(self.kills), ""),
            ("workers that exited and were restarted", str(self.respawned), ""),
            ("PostgreSQL restarts / connections cut", f"{self.pg_restarts} / {self.connections_cut}", ""),
            ("503 answers while the database was away", str(self.answers_503), ""),
            ("chaos phase / time to drain", f"{self.chaos_seconds:.1f} s / {self.drain_seconds:.1f} s", ""),
            ("secrets found (logs, tables, traces)", str(len(self.secrets_found)), "0"),
        ]
        scanned = ", ".join(f"{n} {what}" for what, n in sorted(self.scanned.items()))
        head = (
            f"chaos: {c.runs} runs, {c.workers} workers x {c.concurrency}, a kill every {c.kill_every:g} s, "
            f"{c.pg_restarts} PostgreSQL restarts, {c.fault_rate:.0%} upstream faults"
        )
        width = max(len(r[0]) for r in rows)
        lines = [head, f"{'':{width}}  {'measured':>22}  goal"]
        lines += [f"{name:{width}}  {value:>22}  {goal}" for name, value, goal in rows]
        lines.append(f"scanned for secrets: {scanned}")
        lines += [f"  SECRET FOUND: {s}" for s in self.secrets_found]
        return "\n".join(lines)


# -- the sink and the trace collector -----------------------------------------------------------------


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a worker killed mid-delivery
            super().handle_error(request, client_address)


class Sink:
    """An irreversible API on loopback: POST /effects applies an Idempotency-Key once (a repeat gets the
    first answer back) and counts every delivery; GET /effects/KEY says whether a key arrived; POST
    /v1/traces keeps the OTLP bodies crewline exports, to scan for secrets."""

    def __init__(self) -> None:
        self.deliveries: Counter[str] = Counter()
        self.applied: dict[str, dict[str, Any]] = {}
        self.traces: list[bytes] = []
        self.lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                if self.path.startswith("/v1/traces"):
                    with sink.lock:
                        sink.traces.append(body)
                    return self._answer(200, {})
                key = self.headers.get("Idempotency-Key", "")
                with sink.lock:
                    sink.deliveries[key] += 1
                    result = sink.applied.setdefault(key, {"key": key, "n": len(sink.applied) + 1})
                self._answer(200, result)

            def do_GET(self) -> None:
                key = self.path.removeprefix("/effects/")
                with sink.lock:
                    found = sink.applied.get(key)
                self._answer(200 if found else 404, found or {})

            def _answer(self, status: int, payload: Any) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = _QuietServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# -- processes ----------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Fleet:
    """The crewline processes: one API node and the workers, each logging to its own file."""

    def __init__(self, cfg: Config, db_url: str, project: Path, env: dict[str, str]) -> None:
        self.cfg, self.db_url, self.project, self.env = cfg, db_url, project, env
        self.logs = project / "logs"
        self.logs.mkdir(exist_ok=True)
        self.workers: dict[str, subprocess.Popen[bytes]] = {}
        self.serve: subprocess.Popen[bytes] | None = None
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._count = 0

    def _spawn(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        env = {**self.env, "CREWLINE_DATABASE_URL": f"{self.db_url}?application_name=crewline-{name}"}
        out = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 - the child owns it
        return subprocess.Popen(
            [sys.executable, "-m", "crewline", *args], env=env, cwd=self.project, stdout=out, stderr=out
        )

    def cli(self, *args: str) -> str:
        env = {**self.env, "CREWLINE_DATABASE_URL": self.db_url}
        done = subprocess.run(
            [sys.executable, "-m", "crewline", *args],
            env=env,
            cwd=self.project,
            capture_output=True,
            check=True,
        )
        return done.stdout.decode()

    def start_serve(self) -> None:
        self.serve = self._spawn("serve", "serve", "--no-workers", "--port", str(self.port))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError("crewline serve did not become ready; see " + str(self.logs / "serve.log"))

    def start_worker(self) -> str:
        self._count += 1
        name = f"worker-{self._count}"
        self.workers[name] = self._spawn(name, "worker", "-c", str(self.cfg.concurrency), "--id", name)
        return name

    def respawn_dead(self) -> int:
        """Replace the workers that exited on their own (one started while PostgreSQL was down gives up),
        as a process supervisor would."""
        dead = [name for name, proc in self.workers.items() if proc.poll() is not None]
        for name in dead:
            del self.workers[name]
            self.start_worker()
        return len(dead)

    def kill_one(self, rng: random.Random) -> None:
        name = rng.choice(sorted(self.workers))
        proc = self.workers.pop(name)
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def stop(self) -> None:
        procs = [*self.workers.values(), *([self.serve] if self.serve else [])]
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# -- clients: starting runs, the scripted reviewer and operator ----------------------------------------


@dataclass
class Keys:
    admin: str
    operator: str
    reviewer: str
    trigger: str
    webhook_secret: str
    provider: str

    def all(self) -> dict[str, str]:
        return {
            "admin API key": self.admin,
            "operator API key": self.operator,
            "reviewer API key": self.reviewer,
            "trigger API key": self.trigger,
            "webhook secret": self.webhook_secret,
            "provider key": self.provider,
        }


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def submit_all(url: str, keys: Keys, cfg: Config, report: Report, stop: threading.Event) -> None:
    """Start every run: even ones over the API with a trigger key, odd ones through the signed webhook;
    each is retried (same Idempotency-Key or delivery id) until accepted, through outages."""
    rng = random.Random(cfg.seed)
    with httpx.Client(base_url=url, timeout=15) as http:
        for i in range(cfg.runs):
            job = {"i": i, "sleep": round(rng.uniform(0.2, 1.5), 2), "approve_every": cfg.approve_every}
            while not stop.is_set():
                try:
                    answer = _start(http, keys, i, job)
                except httpx.HTTPError:
                    time.sleep(0.2)
                    continue
                if answer.status_code in (200, 201, 202):
                    break
                if answer.status_code == 503:
                    report.answers_503 += 1
                    time.sleep(float(answer.headers.get("retry-after", "1")))
                    continue
                raise RuntimeError(f"starting run {i}: {answer.status_code} {answer.text[:300]}")


def _start(http: httpx.Client, keys: Keys, i: int, job: dict[str, Any]) -> httpx.Response:
    if i % 2 == 0:
        body = {"workflow": "chaos", "input": job}
        headers = {**_bearer(keys.trigger), "Idempotency-Key": f"chaos-{i}"}
        return http.post("/api/v1/runs", json=body, headers=headers)
    raw = json.dumps(job).encode()
    stamp = str(int(time.time()))
    mac = hmac.new(keys.webhook_secret.encode(), stamp.encode() + b"." + raw, hashlib.sha256).hexdigest()
    headers = {
        "content-type": "application/json",
        "X-Crewline-Timestamp": stamp,
        "X-Crewline-Signature": f"sha256={mac}",
        "X-Crewline-Delivery": f"chaos-{i}",
    }
    return http.post("/hooks/chaos", content=raw, headers=headers)


class Desk:
    """The scripted reviewer (approves approvals) and operator (settles unknown outcomes by asking the sink,
    retries failed runs), polling the review queue over the API."""

    def __init__(self, url: str, keys: Keys, sink: Sink, report: Report) -> None:
        self.reviewer = httpx.Client(base_url=url, timeout=15, headers=_bearer(keys.reviewer))
        self.operator = httpx.Client(base_url=url, timeout=15, headers=_bearer(keys.operator))
        self.sink, self.report = sink, report
        self.seen: set[str] = set()

    def loop(self, stop: threading.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(httpx.HTTPError):
                self.once()
            stop.wait(0.3)

    def once(self) -> None:
        answer = self.operator.get("/api/v1/reviews", params={"status": "pending", "limit": 500})
        if answer.status_code != 200:
            self.report.answers_503 += answer.status_code == 503
            return
        for review in answer.json():
            self.settle(review)

    def settle(self, review: dict[str, Any]) -> None:
        rid, kind = review["id"], review["kind"]
        if kind == "approval":
            done = self.reviewer.post(f"/api/v1/reviews/{rid}/decision", json={"decision": "approve"})
            self.report.approvals_decided += done.status_code == 200
        elif kind == "outcome_unknown":
            if rid not in self.seen:
                self.seen.add(rid)
                self.report.unknown_parked += 1
            key = review["preview"]["idempotency_key"]
            arrived = httpx.get(f"{self.sink.url}/effects/{key}", timeout=10)
            body = (
                {"outcome": "done", "output": arrived.json()}
                if arrived.status_code == 200
                else {"outcome": "retry"}
            )
            if self.operator.post(f"/api/v1/reviews/{rid}/resolve", json=body).status_code == 200:
                self.report.unknown_resolved[body["outcome"]] += 1
        elif kind == "failure":
            retried = self.operator.post(f"/api/v1/reviews/{rid}/settle", json={"choice": "retry"})
            self.report.failures_retried += retried.status_code == 200


# -- the database: progress, faults, the scan ----------------------------------------------------------


def run_statuses(db_url: str) -> Counter[str]:
    import psycopg

    with psycopg.connect(db_url, connect_timeout=3) as conn:
        rows = conn.execute(
            "SELECT status, count(*) FROM runs WHERE workflow = 'chaos' GROUP BY status"
        ).fetchall()
    return Counter({status: n for status, n in rows})


def cron_ticks(db_url: str) -> tuple[int, int, int]:
    """(ticks fired, ticks that started more than one run, ticks skipped) of the two-second schedule."""
    import psycopg

    with psycopg.connect(db_url, connect_timeout=3) as conn:
        ids = [rid for (rid,) in conn.execute("SELECT id FROM runs WHERE workflow = 'tick' ORDER BY id")]
    stamps = sorted(datetime.strptime(rid.rpartition(":")[2], "%Y%m%dT%H%M%S%z").timestamp() for rid in ids)
    skipped = sum(round((b - a) / 2) - 1 for a, b in itertools.pairwise(stamps))
    return len(set(stamps)), len(stamps) - len(set(stamps)), skipped


def unfinished_runs(db_url: str) -> list[tuple[Any, ...]]:
    import psycopg

    sql = (
        "SELECT id, status, wait_reason, lease_owner, lease_until - extract(epoch from now()), recoveries "
        "FROM runs WHERE status <> 'completed' ORDER BY id"
    )
    with psycopg.connect(db_url, connect_timeout=3) as conn:
        return [tuple(row) for row in conn.execute(sql).fetchall()]


def cut_connections(db_url: str, name: str) -> int:
    import psycopg

    sql = "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = %s"
    try:
        with psycopg.connect(db_url, autocommit=True, connect_timeout=3) as conn:
            row = conn.execute(sql, (f"crewline-{name}",)).fetchone()
    except psycopg.OperationalError:
        return 0
    return int(row[0]) if row else 0


def _texts(value: Any) -> list[str]:
    """What a column holds, as text: bytes also decompressed, since payload blobs may be zlib'd."""
    if value is None:
        return []
    if isinstance(value, (bytes, memoryview)):
        raw = bytes(value)
        out = [raw.decode("latin-1")]
        with contextlib.suppress(zlib.error):
            out.append(zlib.decompress(raw).decode("latin-1"))
        return out
    return [str(value)]


def scan_database(db_url: str, needles: dict[str, str], report: Report) -> None:
    import psycopg

    with psycopg.connect(db_url) as conn:
        tables = [
            t
            for (t,) in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
            ).fetchall()
        ]
        for table in tables:
            for row in conn.execute(f'SELECT * FROM "{table}"'):
                report.scanned["rows"] += 1
                for text in (t for v in row for t in _texts(v)):
                    _find(text, needles, f"table {table}", report)
            report.scanned["tables"] += 1


def _find(text: str, needles: dict[str, str], where: str, report: Report) -> None:
    for what, secret in needles.items():
        if secret in text:
            found = f"{what} in {where}"
            if found not in report.secrets_found:
                report.secrets_found.append(found)


def scan_files(logs: Path, sink: Sink, needles: dict[str, str], report: Report) -> None:
    for log in sorted(logs.glob("*.log")):
        report.scanned["log files"] += 1
        _find(log.read_text("latin-1"), needles, f"log {log.name}", report)
    for body in sink.traces:
        report.scanned["trace exports"] += 1
        _find(body.decode("latin-1"), needles, "exported traces", report)


# -- the run ------------------------------------------------------------------------------------------


def project_files(project: Path, fake: FakeProvider, sink: Sink) -> None:
    project.mkdir(parents=True, exist_ok=True)
    (project / "crewline.toml").write_text(
        f"""[crewline]
app = "chaos_app:app"

[models]
default = "fake/chaos"
max_tokens = 16
timeout = "1s"

[models.providers.fake]
format = "openai"
base_url = "{fake.url}/v1"
api_key_env = "CHAOS_PROVIDER_KEY"

[models.prices."fake/chaos"]
input = 1.0
output = 2.0

[models.retry]
attempts = 2
base_delay = "100ms"
max_delay = "1s"

[webhooks.chaos]
workflow = "chaos"
secret_env = "CHAOS_WEBHOOK_SECRET"

[observe]
otlp_endpoint = "{sink.url}"
capture_content = true
""",
        encoding="utf-8",
    )


def repeated_calls(
    fake: FakeProvider, faults: list[tuple[float, float]], report: Report
) -> tuple[int, int, int]:
    """(answered, repeated, repeated while a fault could have caught the first answer before its record)."""
    by_prompt: dict[str, list[float]] = {}
    for seen in fake.answered:
        by_prompt.setdefault(seen.body["messages"][-1]["content"], []).append(seen.at)
    repeated = in_flight = 0
    for times in by_prompt.values():
        for first in times[:-1]:
            repeated += 1
            caught = any(first - 1.0 <= f_end and f_start <= first + IN_FLIGHT for f_start, f_end in faults)
            in_flight += caught
            report.timeline.append(
                f"{first:.2f} repeated call ({'in flight' if caught else 'UNEXPLAINED'}): {times}"
            )
    return len(fake.answered), repeated, in_flight


def run(cfg: Config) -> Report:
    report = Report(cfg, runs=cfg.runs)
    rng = random.Random(cfg.seed)
    work = Path(cfg.workdir or tempfile.mkdtemp(prefix="crewline-chaos-"))
    keys = Keys("", "", "", "", "whsec-" + secrets.token_hex(16), "sk-chaos-" + secrets.token_hex(16))
    cluster = Cluster()
    sink = Sink()
    fake = FakeProvider(api_key=keys.provider, latency=0.02).start()
    fleet: Fleet | None = None
    try:
        cluster.start()
        _admin(cluster.url, 'CREATE DATABASE "chaos"')
        db_url = cluster.url.rsplit("/", 1)[0] + "/chaos"
        project_files(work, fake, sink)
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT), str(HERE)]),
            "CREWLINE_LEASE_SECONDS": str(cfg.lease),
            "CREWLINE_POLL_INTERVAL": "0.1",
            "CHAOS_PROVIDER_KEY": keys.provider,
            "CHAOS_WEBHOOK_SECRET": keys.webhook_secret,
            "CHAOS_SINK_URL": sink.url,
        }
        fleet = Fleet(cfg, db_url, work, env)
        for scope in ("admin", "operator", "reviewer", "trigger"):
            made = json.loads(
                fleet.cli("keys", "create", "--scope", scope, "--name", f"chaos-{scope}", "--json")
            )
            setattr(keys, scope, made["key"])
        fleet.start_serve()
        for _ in range(cfg.workers):
            fleet.start_worker()
        fake.fault_mix(
            cfg.fault_rate,
            [Fault.rate_limit(retry_after=0.5), Fault.http(500), Fault.timeout(seconds=3), Fault.truncate()],
            seed=cfg.seed,
        )
        faults = chaos_phase(cfg, report, fleet, cluster, db_url, keys, sink, rng)
        fake.fault_mix(0, [])
        report.model_calls_answered, report.repeated_calls, report.repeated_in_flight = repeated_calls(
            fake, faults, report
        )
        report.upstream_requests = len(fake.requests)
        report.upstream_failed = report.upstream_requests - report.model_calls_answered
        effects = {key: n for key, n in sink.deliveries.items() if not key.startswith("cron:")}
        report.deliveries = sum(effects.values())
        report.effects = len(effects)
        report.duplicated_effects = sum(n - 1 for n in effects.values() if n > 1)
        report.statuses = run_statuses(db_url)
        report.cron_fired, report.cron_doubled, report.cron_skipped = cron_ticks(db_url)
        report.started_twice = max(0, sum(report.statuses.values()) - cfg.runs)
        fleet.stop()
        time.sleep(2)  # the last trace batches
        needles = keys.all()
        scan_files(fleet.logs, sink, needles, report)
        scan_database(db_url, needles, report)
    finally:
        if fleet is not None:
            fleet.stop()
        fake.stop()
        sink.close()
        cluster.remove()
    return report


def _admin(url: str, sql: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
        conn.execute(sql)


def chaos_phase(
    cfg: Config,
    report: Report,
    fleet: Fleet,
    cluster: Cluster,
    db_url: str,
    keys: Keys,
    sink: Sink,
    rng: random.Random,
) -> list[tuple[float, float]]:
    """Start the runs and break things until most have finished; then let them drain. Returns the faults
    as (began, ended) times."""
    stop = threading.Event()
    desk = Desk(fleet.url, keys, sink, report)
    threads = [
        threading.Thread(target=submit_all, args=(fleet.url, keys, cfg, report, stop), daemon=True),
        threading.Thread(target=desk.loop, args=(stop,), daemon=True),
    ]
    for t in threads:
        t.start()
    faults: list[tuple[float, float]] = []
    began = time.monotonic()
    restarts_at = [(k + 1) / (cfg.pg_restarts + 1) for k in range(cfg.pg_restarts)]
    cut_at = 0.2 if cfg.cut_connection else 2.0  # before the first restart, with pools reconnected
    next_kill = time.time() + cfg.kill_every
    completed = 0
    try:
        while completed < 0.85 * cfg.runs:
            time.sleep(0.5)
            completed = _completed(db_url, completed)
            report.respawned += fleet.respawn_dead()
            done = completed / cfg.runs
            if time.time() >= next_kill:
                t0 = time.time()
                fleet.kill_one(rng)
                fleet.start_worker()
                faults.append((t0, time.time()))
                report.timeline.append(f"{t0:.2f} worker killed")
                report.kills += 1
                next_kill = time.time() + cfg.kill_every * rng.uniform(0.5, 1.5)
            if restarts_at and done >= restarts_at[0]:
                restarts_at.pop(0)
                t0 = time.time()
                cluster.stop("fast")
                time.sleep(1.0)
                cluster.start()
                faults.append((t0, time.time()))
                report.timeline.append(f"{t0:.2f} PostgreSQL restarted, back at {time.time():.2f}")
                report.pg_restarts += 1
            if done >= cut_at:
                t0 = time.time()
                report.connections_cut += cut_connections(db_url, "serve")
                report.connections_cut += cut_connections(db_url, sorted(fleet.workers)[0])
                cut_at = 2.0 if report.connections_cut else cut_at  # none open yet: try again
                faults.append((t0, time.time()))
                report.timeline.append(f"{t0:.2f} connections cut")
            if time.monotonic() - began > cfg.drain_timeout:
                break
        report.chaos_seconds = time.monotonic() - began
        drain_began = time.monotonic()
        while completed < cfg.runs and time.monotonic() - began < cfg.drain_timeout:
            time.sleep(0.5)
            completed = _completed(db_url, completed)
            report.respawned += fleet.respawn_dead()
        if completed < cfg.runs:
            report.timeline += [f"unfinished: {row}" for row in unfinished_runs(db_url)]
        report.drain_seconds = time.monotonic() - drain_began
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    return faults


def _completed(db_url: str, last: int) -> int:
    try:
        return run_statuses(db_url)["completed"]
    except Exception:  # the database is restarting: keep the last count
        return last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    defaults = Config()
    parser.add_argument("--runs", type=int, default=defaults.runs)
    parser.add_argument("--workers", type=int, default=defaults.workers)
    parser.add_argument("--concurrency", type=int, default=defaults.concurrency)
    parser.add_argument("--kill-every", type=float, default=defaults.kill_every, help="seconds, on average")
    parser.add_argument("--pg-restarts", type=int, default=defaults.pg_restarts)
    parser.add_argument("--fault-rate", type=float, default=defaults.fault_rate)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--drain-timeout", type=float, default=defaults.drain_timeout, help="seconds")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the project and logs here")
    parser.add_argument("--timeline", action="store_true", help="print the faults and repeated calls")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    cfg = Config(
        runs=args.runs,
        workers=args.workers,
        concurrency=args.concurrency,
        kill_every=args.kill_every,
        pg_restarts=args.pg_restarts,
        fault_rate=args.fault_rate,
        seed=args.seed,
        drain_timeout=args.drain_timeout,
        workdir=args.workdir,
    )
    report = run(cfg)
    print(report.table())
    if args.timeline:
        print("\n".join(sorted(report.timeline)))
    if args.json:
        figures = {k: v for k, v in vars(report).items() if k != "config"}
        args.json.write_text(json.dumps(figures, indent=2, default=str))


if __name__ == "__main__":
    main()
