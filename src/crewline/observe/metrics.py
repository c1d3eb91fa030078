"""Prometheus metrics: counters and histograms fed by the app's events, gauges read from the database.

:class:`Metrics` is an observer (``app.observers.add(metrics)``) with a registry of its own, never the
process-wide default, so two apps in one process do not mix. Two kinds of series come out of it:

- per process, from the events this process emitted: the OpenTelemetry gen_ai client metrics under their
  Prometheus names (``gen_ai_client_operation_duration_seconds``, ``gen_ai_client_token_usage``,
  ``gen_ai_client_operation_time_to_first_chunk_seconds``) and ``crewline_*`` counters and histograms
  (cost, calls, retries, steps, runs, reviews, memory searches, triggers). Several processes each export
  their own: sum them in PromQL.
- global, read from the database at scrape time by a collector (runs by state, due runs per queue, the
  review queue, budget use, firing alerts): every process answers the same, so take one (``max``), never
  a sum.

Labels are bounded: workflow, queue, model, API key id, step kind, status, error class; never run ids,
prompts or memory scopes. A model name that did not resolve to a provider is labelled ``unresolved``.
"""

from __future__ import annotations

import hmac
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from ..errors import ConfigError, DatabaseUnavailable
from ..flows.review_requests import pending_requests
from ..flows.run_store import count_runs, due_runs
from ..models import reports
from ..models.config import BudgetConfig
from ..store.database import Conn, Database
from .alerts import rule_states
from .events import (
    Event,
    ModelCallEvent,
    RetrievalEvent,
    ReviewEvent,
    RunEvent,
    StepEvent,
    TriggerEvent,
)

__all__ = [
    "CONTENT_TYPE",
    "METRICS_KEYS",
    "AlertsFiring",
    "Metrics",
    "firing_alerts",
    "metrics_token",
    "serve_metrics",
]

CONTENT_TYPE = CONTENT_TYPE_LATEST
# The bucket boundaries the gen_ai semantic conventions ask for.
_DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
_TOKEN_BUCKETS = tuple(float(4**i) for i in range(14))
_STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0)
_GEN_AI = ("gen_ai_operation_name", "gen_ai_request_model", "gen_ai_provider_name", "error_type")

# Reads the firing alerts per rule (:func:`firing_alerts`; None: no gauge).
AlertsFiring = Callable[[Conn], Mapping[str, int]]
# The keys of ``[observe]`` read here (the tracing keys are read by observe/trace_config.py).
METRICS_KEYS = frozenset({"metrics_token_env"})


class Metrics:
    """The Prometheus metrics of one app: feed it events, scrape :meth:`render`."""

    def __init__(
        self,
        db: Callable[[], Database] | None = None,
        *,
        budgets: BudgetConfig | None = None,
        alerts_firing: AlertsFiring | None = None,
    ) -> None:
        """``db``: gives the database the global gauges are read from at scrape time (None: counters
        only); ``budgets``: the configured limits of scopes with no stored one; ``alerts_firing``: the hook
        reading firing alerts."""
        self.registry = CollectorRegistry(auto_describe=True)
        self._instruments()
        if db is not None:
            self.registry.register(_StateCollector(db, budgets or BudgetConfig(), alerts_firing))
        self._call_series: dict[tuple[str | None, ...], tuple[Any, ...]] = {}
        self._step_series: dict[tuple[str, str, str], Any] = {}
        self._handlers: dict[type[Any], Callable[[Any], None]] = {
            ModelCallEvent: self._model_call,
            StepEvent: self._step,
            RunEvent: self._run,
            ReviewEvent: self._review,
            RetrievalEvent: self._retrieval,
            TriggerEvent: self._trigger,
        }

    def _instruments(self) -> None:
        self._model_instruments(self.registry)
        self._workflow_instruments(self.registry)

    def _model_instruments(self, r: CollectorRegistry) -> None:
        self.call_duration = Histogram(
            "gen_ai_client_operation_duration_seconds",
            "GenAI operation duration.",
            _GEN_AI,
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.token_usage = Histogram(
            "gen_ai_client_token_usage",
            "Number of input and output tokens used.",
            (*_GEN_AI[:3], "gen_ai_token_type"),
            buckets=_TOKEN_BUCKETS,
            registry=r,
        )
        self.first_chunk = Histogram(
            "gen_ai_client_operation_time_to_first_chunk_seconds",
            "Time to receive the first chunk of a streamed response.",
            _GEN_AI,
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.calls = Counter(
            "crewline_model_calls",
            "Model calls (after retries and fallbacks), cache hits included.",
            ("model", "workflow", "key", "status"),
            registry=r,
        )
        self.cost = Counter(
            "crewline_model_cost_usd",
            "What model calls cost, in USD.",
            ("model", "workflow", "key"),
            registry=r,
        )

    def _workflow_instruments(self, r: CollectorRegistry) -> None:
        self.retries = Counter(
            "crewline_retries",
            "Attempts after the first: model calls (gateway) and steps.",
            ("what",),
            registry=r,
        )
        self.steps = Histogram(
            "crewline_step_duration_seconds",
            "Steps that ran live, from start to outcome.",
            ("workflow", "kind", "status"),
            buckets=_STEP_BUCKETS,
            registry=r,
        )
        self.runs = Counter(
            "crewline_run_changes",
            "Run state changes seen by this process.",
            ("workflow", "status"),
            registry=r,
        )
        self.reviews = Counter(
            "crewline_reviews",
            "Review requests created (pending) and decided.",
            ("kind", "status"),
            registry=r,
        )
        self.searches = Counter("crewline_memory_searches", "Memory searches.", registry=r)
        self.hits = Counter("crewline_memory_search_hits", "Hits returned by memory searches.", registry=r)
        self.empty_searches = Counter(
            "crewline_memory_searches_empty", "Memory searches that found nothing.", registry=r
        )
        self.triggers = Counter(
            "crewline_triggers", "Webhook deliveries and cron ticks.", ("trigger", "outcome"), registry=r
        )

    # -- the observer ----------------------------------------------------------------------------------

    def observe(self, event: Event) -> None:
        handler = self._handlers.get(type(event))
        if handler is not None:
            handler(event)

    def render(self) -> bytes:
        """The exposition text (reads the database for the gauges: call it off the event loop)."""
        return generate_latest(self.registry)

    def _model_call(self, e: ModelCallEvent) -> None:
        # an unresolved name is the caller's free text: it must not grow this cache (nor the series)
        requested = e.requested if e.provider is not None else None
        key = (e.operation, requested, e.provider, e.model, e.workflow, e.key, e.error_type)
        series = self._call_series.get(key)
        if series is None:
            series = self._call_series[key] = self._bind_call(e)
        duration, tokens_in, tokens_out, first_chunk, calls, cost = series
        duration.observe(e.duration_s)
        if e.input_tokens or e.output_tokens:
            tokens_in.observe(e.input_tokens)
            tokens_out.observe(e.output_tokens)
        if e.streamed and e.ttft_s is not None:
            first_chunk.observe(e.ttft_s)
        calls.inc()
        if e.cost:
            cost.inc(e.cost)
        if e.attempts > 1:
            self.retries.labels("model").inc(e.attempts - 1)

    def _bind_call(self, e: ModelCallEvent) -> tuple[Any, ...]:
        """The series a call with these labels feeds (bound once: ``labels()`` costs more than a sample)."""
        requested = e.requested if e.provider is not None else "unresolved"
        provider = e.provider or ""
        error = e.error_type or ""
        model = f"{provider}/{e.model}" if e.model else requested
        workflow, key = e.workflow or "", e.key or ""
        return (
            self.call_duration.labels(e.operation, requested, provider, error),
            self.token_usage.labels(e.operation, requested, provider, "input"),
            self.token_usage.labels(e.operation, requested, provider, "output"),
            self.first_chunk.labels(e.operation, requested, provider, error),
            self.calls.labels(model, workflow, key, "error" if e.error_type else "ok"),
            self.cost.labels(model, workflow, key),
        )

    def _step(self, e: StepEvent) -> None:
        key = (e.workflow, e.kind, e.status)
        series = self._step_series.get(key)
        if series is None:
            series = self._step_series[key] = self.steps.labels(*key)
        series.observe(e.duration_s)
        if e.attempts > 1 and e.kind != "llm":  # an llm step's attempts are its model call's, counted there
            self.retries.labels("step").inc(e.attempts - 1)

    def _run(self, e: RunEvent) -> None:
        self.runs.labels(e.workflow, e.status).inc()

    def _review(self, e: ReviewEvent) -> None:
        self.reviews.labels(e.kind, e.status).inc()

    def _retrieval(self, e: RetrievalEvent) -> None:
        self.searches.inc()
        self.hits.inc(e.hits)
        if not e.hits:
            self.empty_searches.inc()

    def _trigger(self, e: TriggerEvent) -> None:
        self.triggers.labels(e.trigger, "ok" if e.ok else e.error_type or "failed").inc()


class _StateCollector(Collector):
    """Gauges of the shared state, read at scrape time: the same from every process on one database."""

    def __init__(
        self, db: Callable[[], Database], budgets: BudgetConfig, alerts_firing: AlertsFiring | None
    ) -> None:
        self._db = db
        self._budgets = budgets
        self._alerts = alerts_firing

    def describe(self) -> list[Metric]:
        return []  # read only at scrape time: registering must not touch the database

    def collect(self) -> Iterator[Metric]:
        yield from self._db().query(self._read)

    def _read(self, conn: Conn) -> list[Metric]:
        now = time.time()
        runs = GaugeMetricFamily("crewline_runs", "Runs by state (whole database).", labels=["state"])
        for state, n in sorted(count_runs(conn).items()):
            runs.add_metric([state], n)
        depth = GaugeMetricFamily(
            "crewline_queue_depth", "Runs due for a worker, per queue.", labels=["queue"]
        )
        age = GaugeMetricFamily(
            "crewline_queue_oldest_age_seconds", "How long the longest-due run has waited.", labels=["queue"]
        )
        for queue, (n, since) in sorted(due_runs(conn, now).items()):
            depth.add_metric([queue], n)
            age.add_metric([queue], max(0.0, now - since))
        count, oldest = pending_requests(conn)
        reviews = GaugeMetricFamily("crewline_review_queue_size", "Review requests waiting for a decision.")
        reviews.add_metric([], count)
        waited = GaugeMetricFamily(
            "crewline_review_oldest_age_seconds", "How long the oldest pending review request has waited."
        )
        waited.add_metric([], 0.0 if oldest is None else max(0.0, now - oldest))
        return [runs, depth, age, reviews, waited, self._budget_use(conn), *self._firing(conn)]

    def _budget_use(self, conn: Conn) -> Metric:
        use = GaugeMetricFamily(
            "crewline_budget_use_ratio", "Spent over limit, per budget scope with a limit.", labels=["scope"]
        )
        for row in reports.budgets(conn, self._budgets):
            # a run's scope would make one series per run: its run's own view has it
            if row["limit"] and not str(row["scope"]).startswith("run:"):
                use.add_metric([row["scope"]], row["spent"] / row["limit"])
        return use

    def _firing(self, conn: Conn) -> list[Metric]:
        if self._alerts is None:
            return []
        firing = GaugeMetricFamily("crewline_alerts_firing", "Alerts firing now, per rule.", labels=["rule"])
        for rule, n in sorted(self._alerts(conn).items()):
            firing.add_metric([rule], n)
        return [firing]


def firing_alerts(conn: Conn) -> dict[str, int]:
    """1 for each evaluated alert rule firing now, 0 for the others."""
    return {rule: int(firing) for rule, (firing, _, _) in rule_states(conn).items()}


def metrics_token(section: Any, environ: Mapping[str, str]) -> str | None:
    """The bearer token ``GET /metrics`` asks for: ``[observe] metrics_token_env`` names the variable
    holding it; without it the endpoint is open, like ``/healthz``."""
    if section is None:
        return None
    if not isinstance(section, Mapping):
        raise ConfigError('[observe] must be a table, e.g. [observe] metrics_token_env = "METRICS_TOKEN"')
    name = section.get("metrics_token_env")
    if name is None:
        return None
    if not isinstance(name, str) or not name.strip():
        raise ConfigError("[observe] metrics_token_env must name an environment variable, e.g. METRICS_TOKEN")
    token = environ.get(name, "")
    if not token.strip():
        raise ConfigError(
            f"[observe] metrics_token_env names {name}, which is not set: set it to the token scrapers send "
            "as Authorization: Bearer <token>, or remove metrics_token_env to leave /metrics open"
        )
    return token.strip()


def serve_metrics(metrics: Metrics, host: str, port: int, token: str | None = None) -> ThreadingHTTPServer:
    """Serve ``GET /metrics`` from a daemon thread (for processes with no HTTP server: workers)."""
    expected = None if token is None else f"Bearer {token}".encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            sent = self.headers.get("Authorization", "").encode()
            if self.path.split("?")[0] != "/metrics":
                self._answer(404, b"not found: the metrics are at /metrics\n", "text/plain")
            elif expected is not None and not hmac.compare_digest(sent, expected):
                self._answer(401, b"send Authorization: Bearer <token> ([observe] metrics_token_env)\n")
            else:
                try:
                    self._answer(200, metrics.render(), CONTENT_TYPE)
                except DatabaseUnavailable:
                    self._answer(503, b"the database cannot be reached to read the gauges\n")

        def _answer(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # one line per scrape would drown the worker's log

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="crewline-metrics", daemon=True).start()
    return server
