"""Retry delays and per-deployment circuit breakers.

A breaker watches the last ``window`` outcomes of one deployment; when at least ``min_calls`` were seen and
the share of provider failures (5xx, timeouts, cut-off streams) reaches ``error_ratio`` it opens and the
deployment is skipped for ``cooldown`` seconds; then one probe call is let through (half-open): success
closes it, failure opens it again. Rate limiting is not a failure here: a 429 cools the deployment down for
its ``retry-after`` instead.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable

from ..errors import ModelError, ModelTimeout, ProviderUnavailable
from .config import BreakerConfig, RetryConfig

__all__ = ["CircuitBreaker", "backoff_delay", "counts_against_breaker"]


def backoff_delay(
    retry: RetryConfig, attempt: int, retry_after: float | None, rand: Callable[[], float] = random.random
) -> float | None:
    """Seconds to wait before try ``attempt + 1``; ``None`` when the provider asks for longer than we wait."""
    if retry_after is not None:
        return float(retry_after) if retry_after <= retry.max_retry_after else None
    ceiling = min(retry.max_delay, retry.base_delay * 2.0 ** (attempt - 1))
    return ceiling * (0.5 + rand() / 2)  # jitter keeps many callers from retrying in lockstep


def counts_against_breaker(error: ModelError) -> bool:
    return isinstance(error, ProviderUnavailable | ModelTimeout)


class CircuitBreaker:
    __slots__ = ("_clock", "_outcomes", "_probe_at", "_probing", "config", "opened_at", "state")

    def __init__(self, config: BreakerConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.state = "closed"
        self.opened_at = 0.0
        self._outcomes: deque[bool] = deque(maxlen=config.window)
        self._probing = False
        self._probe_at = 0.0
        self._clock = clock

    def allow(self) -> bool:
        if self.state == "closed":
            return True
        if self.state == "open" and self._clock() - self.opened_at >= self.config.cooldown:
            self.state = "half_open"
            self._probing = False
        # A probe whose outcome never came back (cancelled, refused by a rate limit) frees its slot in time.
        if self.state == "half_open" and (
            not self._probing or self._clock() - self._probe_at >= self.config.cooldown
        ):
            self._probing = True
            self._probe_at = self._clock()
            return True
        return False

    def record(self, ok: bool) -> None:
        if self.state == "half_open":
            self._probing = False
            if ok:
                self.state = "closed"
                self._outcomes.clear()
            else:
                self._open()
            return
        self._outcomes.append(ok)
        failures = self._outcomes.count(False)
        if (
            len(self._outcomes) >= self.config.min_calls
            and failures / len(self._outcomes) >= self.config.error_ratio
        ):
            self._open()

    def _open(self) -> None:
        self.state = "open"
        self.opened_at = self._clock()
        self._outcomes.clear()
