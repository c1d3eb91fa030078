"""Trying a route's deployments: rate limits, circuit breakers, retries honouring ``retry-after`` and
fallbacks, until one deployment answers or the route gives up.

What an attempt does (a completion, the first chunk of a stream, an embedding) is the caller's; this
module only decides where it goes and whether to try again. When the route gives up, the error it raises
carries how many attempts were made (:attr:`ModelError.tries`), so the call's record says so.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from ..errors import BadRequest, ContextTooLong, ModelError, ProviderUnavailable, RateLimited
from .config import RetryConfig
from .limits import LocalLimiter, SharedLimiter
from .resilience import backoff_delay, counts_against_breaker
from .routing import Deployment, Route, Router

__all__ = ["Dispatcher"]

T = TypeVar("T")

log = logging.getLogger("crewline.models")


class Dispatcher:
    """Runs one attempt function over a route's deployments; ``run`` returns what the first deployment to
    succeed returned, that deployment and the number of attempts made."""

    def __init__(
        self,
        router: Router,
        retry: RetryConfig,
        shared_limits: SharedLimiter | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.router = router
        self.retry = retry
        self._local_limits = LocalLimiter()
        self._shared_limits = shared_limits
        self._sleep = sleep
        self._rand = rand

    async def run(
        self, route: Route, tokens: int, attempt: Callable[[Deployment], Awaitable[T]]
    ) -> tuple[T, Deployment, int]:
        last: ModelError | None = None
        tries = 0
        for pool in route.steps:
            tried: set[Deployment] = set()
            for n in range(1, self.retry.attempts + 1):
                dep = await self._admit(pool, tokens, tried)
                if dep is None:
                    last = last or ProviderUnavailable(
                        f"{route.name}: every deployment of {[d.name for d in pool]} is unavailable "
                        "(circuit open or cooling down after 429)"
                    )
                    break
                tries += 1
                dep.in_flight += 1
                try:
                    result = await attempt(dep)
                except ModelError as e:
                    last = e
                    self._observe_failure(dep, e)
                    if not e.retryable:
                        if _falls_back(e):
                            break
                        e.tries = tries
                        raise
                    if n == self.retry.attempts:
                        break
                    tried.add(dep)
                    if any(d not in tried for d in pool):
                        continue  # another deployment of the pool can take the retry right away
                    delay = backoff_delay(self.retry, n, getattr(e, "retry_after", None), self._rand)
                    if delay is None:
                        break  # the provider wants longer than we wait: try the fallback instead
                    await self._sleep(delay)
                    dep.cooldown_until = 0.0  # we have waited out what it asked for
                    tried.clear()
                    continue
                finally:
                    dep.in_flight -= 1
                dep.breaker.record(True)
                return result, dep, tries
        assert last is not None
        last.tries = tries
        raise last

    async def _admit(
        self, pool: Sequence[Deployment], tokens: int, tried: set[Deployment]
    ) -> Deployment | None:
        """A deployment with room under its RPM/TPM limits, waiting (bounded) for one when all are full."""
        for _ in range(3):
            dep = self.router.pick(pool, tried) or self.router.pick(pool)
            if dep is None:
                return None
            wait = self._local_limits.acquire(dep, tokens)
            if wait == 0.0 and self._shared_limits is not None:
                wait = await self._shared_limits.acquire(dep, tokens)
            if wait == 0.0:
                return dep
            others = [d for d in pool if d is not dep and d not in tried]
            if others:
                tried.add(dep)
                continue
            if wait > self.retry.max_retry_after:
                raise RateLimited(
                    f"{dep.name}: over its rpm/tpm limit for {wait:.1f}s more",
                    provider=dep.provider,
                    status=None,
                    retry_after=wait,
                )
            await self._sleep(wait)
        return self.router.pick(pool)

    def _observe_failure(self, dep: Deployment, e: ModelError) -> None:
        if isinstance(e, RateLimited):
            cool = e.retry_after if e.retry_after is not None else self.retry.base_delay
            dep.cooldown_until = time.monotonic() + min(cool, self.retry.max_retry_after)
        elif counts_against_breaker(e):
            dep.breaker.record(False)
        log.info("%s failed: %s: %s", dep.name, type(e).__name__, e)


def _falls_back(e: ModelError) -> bool:
    """Whether a non-retryable error is worth the next fallback (another provider may take it)."""
    if isinstance(e, ContextTooLong):
        return True
    return not isinstance(e, BadRequest)
