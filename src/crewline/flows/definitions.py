"""What a workflow is: its function, name, queue, version, schedule, and how its values are (de)serialised.

Inputs and outputs cross the database as JSON. Each workflow and step function's annotations give the
Pydantic ``TypeAdapter`` that validates a value on the way back in, so a replayed step returns the same type
(a model instance, not a dict) as the live call did.
"""

from __future__ import annotations

import importlib
import inspect
import math
import random
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import pydantic
from croniter import croniter

from ..config import parse_duration
from ..connectors.base import EFFECTS, Effect
from ..errors import ConfigError, ConnectorError, CrewlineError, InvalidInput, ModelError
from ..models.config import OVERFLOW_POLICIES, Overflow

__all__ = ["EFFECTS", "Effect", "Queue", "RetryPolicy", "Workflow", "adapter_for", "return_adapter"]


@dataclass(frozen=True)
class RetryPolicy:
    """Jittered exponential backoff: attempt ``n`` waits ``initial * multiplier**(n-1)``, capped, +-jitter."""

    max_attempts: int = 3
    initial_delay: float = 0.5
    max_delay: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.25

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigError(f"RetryPolicy.max_attempts must be at least 1, got {self.max_attempts}")
        if self.initial_delay < 0 or self.max_delay < 0 or self.multiplier < 1 or not 0 <= self.jitter <= 1:
            raise ConfigError("RetryPolicy needs delays >= 0, multiplier >= 1 and jitter in [0, 1]")

    def delay(self, attempt: int) -> float:
        base = min(self.max_delay, self.initial_delay * self.multiplier ** (attempt - 1))
        return max(0.0, base * (1 + random.uniform(-self.jitter, self.jitter)))

    @staticmethod
    def retryable(exc: BaseException) -> bool:
        """Our own errors know whether they are transient; anything else from user code is retried."""
        if isinstance(exc, ModelError | ConnectorError):
            return exc.retryable
        return not isinstance(exc, CrewlineError)


NO_RETRY = RetryPolicy(max_attempts=1)
DEFAULT_RETRY = RetryPolicy()


@dataclass(frozen=True)
class Queue:
    name: str
    concurrency: int | None = None  # across all workers; None is unlimited


@dataclass
class Workflow:
    fn: Callable[..., Awaitable[Any]]
    name: str
    queue: str = "default"
    version: str | None = None
    schedule: str | None = None
    priority: int = 0
    budget: float | None = None  # USD per run
    daily_budget: float | None = None  # USD per day across the workflow's runs
    on_budget: str = "fail"  # fail | degrade | pause
    on_failure: str = "fail"  # fail | review: a failed run waits in the review queue for an operator
    overflow: Overflow | None = None  # a model request over its window; None: [models] overflow
    shadow_of: str | None = None  # the live workflow this one runs beside in shadow (see flows/shadow.py)
    input_adapter: pydantic.TypeAdapter[Any] | None = field(default=None, repr=False)
    output_adapter: pydantic.TypeAdapter[Any] | None = field(default=None, repr=False)

    @classmethod
    def define(cls, fn: Callable[..., Awaitable[Any]], **options: Any) -> Workflow:
        if not inspect.iscoroutinefunction(fn):
            raise ConfigError(f"workflow {fn.__qualname__} must be an async def taking (ctx[, input])")
        params = list(inspect.signature(fn).parameters.values())
        if not 1 <= len(params) <= 2:
            raise ConfigError(f"workflow {fn.__qualname__} must take (ctx) or (ctx, input)")
        try:
            hints = typing.get_type_hints(fn)
        except Exception as e:
            raise ConfigError(
                f"cannot resolve the type annotations of workflow {fn.__qualname__} ({e}); "
                "define the types it uses at module level"
            ) from e
        schedule = options.get("schedule")
        if schedule is not None and not croniter.is_valid(schedule):
            raise ConfigError(
                f"workflow {fn.__qualname__}: schedule {schedule!r} is not a valid cron expression"
            )
        options = {
            **options,
            "budget": parse_money(options.get("budget"), "/run"),
            "daily_budget": parse_money(options.get("daily_budget"), "/day"),
        }
        if options.get("overflow") not in (None, *OVERFLOW_POLICIES):
            raise ConfigError(
                f"workflow {fn.__qualname__}: overflow must be {', '.join(OVERFLOW_POLICIES)} or None"
            )
        if options.get("on_budget", "fail") not in ON_BUDGET:
            raise ConfigError(f"workflow {fn.__qualname__}: on_budget must be fail, degrade or pause")
        if options.get("on_failure", "fail") not in ("fail", "review"):
            raise ConfigError(f"workflow {fn.__qualname__}: on_failure must be fail or review")
        wf = cls(
            fn=fn,
            name=options.get("name") or fn.__name__,
            **{k: v for k, v in options.items() if k != "name"},
        )
        if len(params) == 2:
            wf.input_adapter = pydantic.TypeAdapter(hints.get(params[1].name, Any))
        if hints.get("return") not in (None, type(None)):
            wf.output_adapter = pydantic.TypeAdapter(hints["return"])
        return wf

    @property
    def takes_input(self) -> bool:
        return self.input_adapter is not None

    def validate_input(self, value: Any) -> Any:
        """The input as the workflow will see it; raises :class:`InvalidInput` naming the problem."""
        if self.input_adapter is None:
            if value is not None and value != {}:  # {} is how many clients say "no input"
                raise InvalidInput(f"workflow {self.name} takes no input, got {_short(value)}")
            return None
        try:
            return self.input_adapter.validate_python(value)
        except pydantic.ValidationError as e:
            raise InvalidInput(
                f"input for workflow {self.name} is not valid: {_validation_summary(e)}"
            ) from e

    def dump_input(self, value: Any) -> Any:
        if self.input_adapter is None:
            return None
        return self.input_adapter.dump_python(value, mode="json")


def _hints(fn: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn)
    except Exception:
        return {}


@lru_cache(maxsize=1024)
def return_type(fn: Callable[..., Any]) -> Any:
    """``fn``'s return annotation, or None when it has none (or it says Any)."""
    ret = _hints(fn).get("return")
    return None if ret is None or ret is type(None) or ret is Any else ret


@lru_cache(maxsize=1024)
def return_adapter(fn: Callable[..., Any]) -> pydantic.TypeAdapter[Any] | None:
    """The adapter for ``fn``'s return annotation, or None when it has none."""
    ret = return_type(fn)
    return None if ret is None else adapter_for(ret)


_PLAIN: dict[str, type] = {t.__name__: t for t in (int, float, str, bool, list, dict)}


def type_ref(fn: Callable[..., Any]) -> str | None:
    """``fn``'s return type as a name that another process can resolve (:func:`validate_as`), if any."""
    tp = return_type(fn)
    if isinstance(tp, type) and _PLAIN.get(tp.__name__) is tp:
        return tp.__name__
    if isinstance(tp, type) and "<locals>" not in tp.__qualname__:
        return f"{tp.__module__}:{tp.__qualname__}"
    return None


def validate_as(ref: str | None, value: Any, what: str) -> Any:
    """``value`` validated as the type :func:`type_ref` named, as JSON; unchecked if it cannot be resolved."""
    tp: Any = _PLAIN.get(ref or "")
    if tp is None and ref:
        module_name, _, qualname = ref.partition(":")
        try:
            tp = importlib.import_module(module_name)
            for part in qualname.split("."):
                tp = getattr(tp, part)
        except (ImportError, AttributeError):
            tp = None
    if tp is None:
        return value
    try:
        adapter = adapter_for(tp)
        return adapter.dump_python(adapter.validate_python(value), mode="json")
    except pydantic.ValidationError as e:
        raise InvalidInput(f"{what} must be a {ref}: {_validation_summary(e)}") from e


@lru_cache(maxsize=1024)
def adapter_for(tp: Any) -> pydantic.TypeAdapter[Any]:
    return pydantic.TypeAdapter(tp)


def _validation_summary(e: pydantic.ValidationError) -> str:
    parts = []
    for err in e.errors()[:3]:
        loc = ".".join(str(p) for p in err["loc"]) or "input"
        parts.append(f"{loc}: {err['msg']}")
    more = f" (and {e.error_count() - 3} more)" if e.error_count() > 3 else ""
    return "; ".join(parts) + more


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) < 80 else text[:77] + "..."


ON_BUDGET = ("fail", "degrade", "pause")


def parse_money(value: str | float | int | None, per: str) -> float | None:
    """USD from ``0.5``, ``"$0.50"`` or ``"$0.50/run"`` (the period, if written, must be ``per``)."""
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        amount = float(value)
    else:
        text = str(value).strip().lower().removesuffix(per).strip().lstrip("$")
        try:
            amount = float(text)
        except ValueError:
            raise ConfigError(f"budget {value!r} is not an amount: write e.g. '$0.50{per}' or 0.5") from None
    if not math.isfinite(amount) or amount < 0:
        raise ConfigError(f"budget {value!r} must be a finite amount of at least 0, e.g. '$0.50{per}'")
    return amount


def duration_seconds(value: str | float | int | None) -> float | None:
    return None if value is None else parse_duration(value)
