"""OpenTelemetry spans, with the ``gen_ai`` semantic conventions, built from crewline's events.

Events arrive when things end, so every span is built whole (start and end times from the event) and
handed straight to the span processor. Ids are decided up front so that children can name their parent
before it exists: a run's trace id and its span id are the W3C ``traceparent`` stored with the run when it
was created (every process executing the run reads the same one, so a run parked in one worker and resumed
in another stays one trace), and a step's span id is derived from the run id and the step number, so the
model calls and memory searches made inside a step hang under it.

Spans: ``invoke_workflow {workflow}`` per run (when it ends), ``execute_tool {name}`` per tool step,
``step {name}`` per other step, ``chat {model}`` / ``embeddings {model}`` per model call and ``retrieval``
per memory search. Prompts and replies are attached only with ``[observe] capture_content = true``.
Observing an event only queues it: spans are built on the tracer's thread and exported by a batch
processor on its own, so neither building nor a slow or absent collector holds up a run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections import OrderedDict, deque
from collections.abc import Mapping
from typing import Any

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from .events import Event, ModelCallEvent, RetrievalEvent, RunEvent, StepEvent
from .trace_config import TraceSettings

__all__ = ["Tracer"]

_SCOPE = InstrumentationScope("crewline")
_ENDED = frozenset({"completed", "failed", "cancelled"})
_RUNS_KEPT = 10_000  # runs executing in this process whose trace context is at hand
_BUILD_EVERY_S = 0.5
log = logging.getLogger("crewline.observe")
AttrValue = str | bool | int | float | list[str]


class Tracer:
    """An observer that turns events into spans and hands them to ``processor``."""

    def __init__(
        self,
        processor: SpanProcessor,
        *,
        capture_content: bool = False,
        service_name: str = "crewline",
    ) -> None:
        self.processor = processor
        self.capture_content = capture_content
        self._resource = Resource.create({"service.name": service_name})
        # run id -> (trace id, run span id), learnt from the run's events while it executes here.
        self._runs: OrderedDict[str, tuple[int, int]] = OrderedDict()
        # Spans are built off the caller's path: observe() only queues the event (a run's step or a model
        # call pays a deque append), and this thread turns the queue into spans, in order.
        self._events: deque[Event] = deque()
        self._building = threading.Lock()
        self._wake = threading.Event()
        self._stopped = False
        self._thread = threading.Thread(target=self._build_loop, name="crewline-traces", daemon=True)
        self._thread.start()

    @classmethod
    def exporting(cls, settings: TraceSettings) -> Tracer:
        """A tracer batching its spans to the OTLP/HTTP endpoint of ``settings``."""
        exporter = OTLPSpanExporter(endpoint=settings.endpoint, headers=dict(settings.headers))
        return cls(
            BatchSpanProcessor(exporter),
            capture_content=settings.capture_content,
            service_name=settings.service_name,
        )

    def flush(self, timeout_s: float = 5.0) -> bool:
        self._build_pending()
        return self.processor.force_flush(int(timeout_s * 1000))

    def shutdown(self) -> None:
        """Export what is pending and stop the threads."""
        self._stopped = True
        self._wake.set()
        self._thread.join()
        self._build_pending()
        self.processor.shutdown()

    def observe(self, event: Event) -> None:
        self._events.append(event)

    def _build_loop(self) -> None:
        while not self._stopped:
            self._wake.wait(_BUILD_EVERY_S)
            self._wake.clear()
            self._build_pending()

    def _build_pending(self) -> None:
        with self._building:
            while self._events:
                try:
                    self._build(self._events.popleft())
                except Exception:  # one odd event must not stop the spans of every later one
                    log.exception("could not build a span")

    def _build(self, event: Event) -> None:
        if isinstance(event, ModelCallEvent):
            self._model_call(event)
        elif isinstance(event, StepEvent):
            self._step(event)
        elif isinstance(event, RetrievalEvent):
            self._retrieval(event)
        elif isinstance(event, RunEvent):
            self._run(event)

    # -- one method per event ------------------------------------------------------------------------

    def _run(self, e: RunEvent) -> None:
        trace_id, span_id = _run_ids(e.run_id, e.trace_parent)
        if e.status in ("started", "resumed"):
            self._runs[e.run_id] = (trace_id, span_id)
            self._runs.move_to_end(e.run_id)
            while len(self._runs) > _RUNS_KEPT:
                self._runs.popitem(last=False)
            return
        self._runs.pop(e.run_id, None)
        if e.status not in _ENDED:
            return  # parked: the run span ends when the run does, wherever that is
        attrs: dict[str, AttrValue] = {
            "gen_ai.operation.name": "invoke_workflow",
            "gen_ai.agent.name": e.workflow,
            "crewline.workflow": e.workflow,
            "crewline.run.id": e.run_id,
            "crewline.run.status": e.status,
            "crewline.queue": e.queue,
        }
        self._emit(
            f"invoke_workflow {e.workflow}",
            SpanContext(trace_id, span_id, False, TraceFlags(TraceFlags.SAMPLED)),
            None,
            attrs,
            (e.created_at, e.at),
            error_type=e.error_type or ("Cancelled" if e.status == "cancelled" else None),
        )

    def _step(self, e: StepEvent) -> None:
        trace_id, run_span = self._run_context(e.run_id)
        final = e.status in ("done", "failed")
        # A step that parks (waiting, intent) ends again later: only its final span carries the id
        # its children were given.
        span_id = _derived_id(f"{e.run_id}/{e.step}" if final else f"{e.run_id}/{e.step}/{e.status}")
        attrs: dict[str, AttrValue] = {
            "crewline.run.id": e.run_id,
            "crewline.workflow": e.workflow,
            "crewline.step.number": e.step,
            "crewline.step.name": e.name,
            "crewline.step.kind": e.kind,
            "crewline.step.effect": e.effect,
            "crewline.step.status": e.status,
            "crewline.step.attempts": e.attempts,
        }
        if e.kind == "tool":
            name = f"execute_tool {e.name}"
            attrs.update({"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": e.name})
        else:
            name = f"step {e.name}"
        self._emit(
            name,
            _context(trace_id, span_id),
            _context(trace_id, run_span),
            attrs,
            (e.started_at, e.started_at + e.duration_s),
            error_type=e.error_type,
        )

    def _model_call(self, e: ModelCallEvent) -> None:
        trace_id, parent = self._parent_of(e.run_id, e.step)
        attrs: dict[str, AttrValue] = {
            "gen_ai.operation.name": e.operation,
            "gen_ai.request.model": e.requested,
            "gen_ai.usage.input_tokens": e.input_tokens,
            "gen_ai.usage.output_tokens": e.output_tokens,
            "crewline.cost_usd": e.cost,
            "crewline.price_known": e.price_known,
            "crewline.attempts": e.attempts,
            "crewline.cache_hit": e.cache_hit,
            "crewline.streamed": e.streamed,
        }
        optional: dict[str, AttrValue | None] = {
            "gen_ai.provider.name": e.provider,
            "gen_ai.response.model": e.model,
            "gen_ai.usage.cache_read.input_tokens": e.cache_read_tokens or None,
            "gen_ai.usage.cache_creation.input_tokens": e.cache_write_tokens or None,
            "crewline.usage.reasoning_tokens": e.reasoning_tokens or None,
            "crewline.ttft_s": e.ttft_s,
            "crewline.run.id": e.run_id,
            "crewline.workflow": e.workflow,
            "crewline.step.number": e.step,
            "crewline.prompt": e.prompt,
            "crewline.key.id": e.key,
        }
        attrs.update({k: v for k, v in optional.items() if v is not None})
        if self.capture_content:
            attrs.update(content_attributes(e.request, e.response))
        self._emit(
            f"{e.operation} {e.model or e.requested}",
            _context(trace_id, _random_id(8)),
            None if parent is None else _context(trace_id, parent),
            attrs,
            (e.started_at, e.started_at + e.duration_s),
            error_type=e.error_type,
            kind=SpanKind.CLIENT,
        )

    def _retrieval(self, e: RetrievalEvent) -> None:
        trace_id, parent = self._parent_of(e.run_id, e.step)
        attrs: dict[str, AttrValue] = {
            "gen_ai.operation.name": "retrieval",
            "gen_ai.retrieval.top_k": e.k,
            "crewline.memory.scopes": list(e.scopes),
            "crewline.retrieval.hits": e.hits,
        }
        optional: dict[str, AttrValue | None] = {
            "crewline.retrieval.top_score": e.top_score,
            "crewline.run.id": e.run_id,
            "crewline.workflow": e.workflow,
            "crewline.step.number": e.step,
        }
        attrs.update({k: v for k, v in optional.items() if v is not None})
        self._emit(
            "retrieval",
            _context(trace_id, _random_id(8)),
            None if parent is None else _context(trace_id, parent),
            attrs,
            (e.started_at, e.started_at + e.duration_s),
        )

    # -- ids and emission ----------------------------------------------------------------------------

    def _run_context(self, run_id: str) -> tuple[int, int]:
        known = self._runs.get(run_id)
        return known if known is not None else _run_ids(run_id, None)

    def _parent_of(self, run_id: str | None, step: int | None) -> tuple[int, int | None]:
        """The trace and parent span of something done by a run's step (or a new trace outside runs)."""
        if run_id is None:
            return _random_id(16), None
        trace_id, run_span = self._run_context(run_id)
        return trace_id, run_span if step is None else _derived_id(f"{run_id}/{step}")

    def _emit(
        self,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        attributes: dict[str, AttrValue],
        times: tuple[float, float],
        *,
        error_type: str | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
    ) -> None:
        status = Status(StatusCode.UNSET)
        if error_type is not None:
            attributes["error.type"] = error_type
            status = Status(StatusCode.ERROR)
        start = int(times[0] * 1e9)
        span = ReadableSpan(
            name,
            context=context,
            parent=parent,
            resource=self._resource,
            attributes=attributes,
            kind=kind,
            status=status,
            start_time=start,
            end_time=max(start, int(times[1] * 1e9)),
            instrumentation_scope=_SCOPE,
        )
        self.processor.on_end(span)


def content_attributes(request: Any, response: Any) -> dict[str, AttrValue]:
    """``gen_ai.input.messages`` / ``gen_ai.output.messages`` as JSON, in the conventions' shape.

    Only messages and replies are read: the request's credentials never travel with it (the gateway
    holds keys on the provider, not on the request).
    """
    attrs: dict[str, AttrValue] = {}
    messages = getattr(request, "messages", None)
    if messages is not None:
        attrs["gen_ai.input.messages"] = _json([_message(m) for m in messages])
    elif isinstance(request, Mapping) and "input" in request:  # an embeddings call
        attrs["gen_ai.input.messages"] = _json(
            [{"role": "user", "parts": [{"type": "text", "content": str(x)}]} for x in request["input"]]
        )
    if response is not None and hasattr(response, "text"):
        reply = _message(response, role="assistant")
        reply["finish_reason"] = str(getattr(response, "finish_reason", "stop"))
        attrs["gen_ai.output.messages"] = _json([reply])
    return attrs


def _message(m: Any, role: str | None = None) -> dict[str, Any]:
    text = getattr(m, "text", "")
    if getattr(m, "tool_call_id", None):
        return {
            "role": "tool",
            "parts": [{"type": "tool_call_response", "id": m.tool_call_id, "response": text}],
        }
    parts: list[dict[str, Any]] = [{"type": "text", "content": text}] if text else []
    parts.extend(
        {"type": "tool_call", "id": call.id, "name": call.name, "arguments": call.arguments}
        for call in getattr(m, "tool_calls", ())
    )
    return {"role": role or str(getattr(m, "role", "user")), "parts": parts}


def _json(value: Any) -> str:
    return json.dumps(value, default=str, ensure_ascii=False)


def _context(trace_id: int, span_id: int) -> SpanContext:
    return SpanContext(trace_id, span_id, False, TraceFlags(TraceFlags.SAMPLED))


def _run_ids(run_id: str, trace_parent: str | None) -> tuple[int, int]:
    """(trace id, run span id) from the run's stored traceparent; runs created before crewline stored
    one get ids derived from their run id, the same in every process."""
    if trace_parent is not None:
        parts = trace_parent.split("-")
        if len(parts) == 4 and len(parts[1]) == 32 and len(parts[2]) == 16:
            try:
                return int(parts[1], 16), int(parts[2], 16)
            except ValueError:
                pass
    return _derived_id(f"trace/{run_id}", 16), _derived_id(f"run/{run_id}")


def _derived_id(key: str, size: int = 8) -> int:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:size], "big") or 1


def _random_id(size: int) -> int:
    return int.from_bytes(os.urandom(size), "big") or 1
