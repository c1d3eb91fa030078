"""From the name a caller gives to the deployments that may serve it.

A name is an alias or tier from config, a configured deployment, or ``provider/model``. It resolves to a
:class:`Route`: fallback steps tried in order, each a pool of deployments balanced by weight among those
whose breaker is closed and that are not cooling down after a 429. Tiers have an order; escalation moves to
the next tier.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field

from ..errors import ConfigError, UnknownModel
from .config import DeploymentConfig, ModelsConfig
from .resilience import CircuitBreaker

__all__ = ["Deployment", "Route", "Router"]


@dataclass(eq=False)
class Deployment:
    """A deployment with its live state: breaker, 429 cool-down, calls in flight."""

    name: str
    provider: str
    model: str
    rpm: int | None
    tpm: int | None
    weight: float
    breaker: CircuitBreaker
    cooldown_until: float = 0.0
    in_flight: int = 0

    @property
    def key(self) -> str:
        return f"{self.provider}/{self.model}"

    def available(self, now: float) -> bool:
        return now >= self.cooldown_until and self.breaker.allow()


@dataclass(frozen=True)
class Route:
    name: str
    steps: tuple[tuple[Deployment, ...], ...]
    deployments: tuple[Deployment, ...] = field(default=())


class Router:
    def __init__(
        self,
        config: ModelsConfig,
        providers: Collection[str],
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.config = config
        self.providers = set(providers)
        self._clock = clock
        self._rand = rand
        self._deployments: dict[str, Deployment] = {}
        self._routes: dict[str, Route] = {}

    def resolve(self, name: str | None) -> Route:
        """The route for ``name`` (the configured default when ``None``); unknown names fail before any request."""
        name = name or self.config.default
        if not name:
            raise UnknownModel(
                'no model given and no [models] default configured: pass model="provider/model"'
            )
        route = self._routes.get(name)
        if route is None:
            steps = tuple(
                tuple(self._deployment(ref, name) for ref in pool) for pool in self._expand(name, ())
            )
            seen: dict[int, Deployment] = {}
            for pool in steps:
                for d in pool:
                    seen.setdefault(id(d), d)
            route = self._routes[name] = Route(name, steps, tuple(seen.values()))
        return route

    def deployments(self) -> list[Deployment]:
        """Every deployment resolved so far, by name."""
        return sorted(self._deployments.values(), key=lambda d: d.name)

    def next_tier(self, name: str | None) -> str | None:
        order = self.config.tier_order
        name = name or self.config.default
        if name in order:
            i = order.index(name)
            return order[i + 1] if i + 1 < len(order) else None
        return None

    def pick(self, pool: Sequence[Deployment], exclude: Collection[Deployment] = ()) -> Deployment | None:
        """A deployment from ``pool`` by weight, preferring ones with fewer calls in flight."""
        now = self._clock()
        ready = [d for d in pool if d not in exclude and now >= d.cooldown_until]
        if len(ready) > 1:
            least = min(d.in_flight for d in ready)
            ready = [d for d in ready if d.in_flight == least] or ready
        total = sum(d.weight for d in ready)
        point = self._rand() * total
        for d in sorted(ready, key=lambda d: -d.weight):
            point -= d.weight
            if point <= 0 and d.breaker.allow():
                return d
        return next((d for d in ready if d.breaker.allow()), None)

    def _expand(self, name: str, trail: tuple[str, ...]) -> list[tuple[str, ...]]:
        if name in trail:
            raise ConfigError(f"[models.aliases] {' -> '.join((*trail, name))} is a cycle")
        target = self.config.aliases.get(name)
        if target is None:
            return [(name,)]
        steps: list[tuple[str, ...]] = []
        for pool in target.steps:
            if len(pool) == 1:
                steps.extend(self._expand(pool[0], (*trail, name)))
            else:
                steps.append(pool)
        return steps

    def _deployment(self, ref: str, asked: str) -> Deployment:
        found = self._deployments.get(ref)
        if found is not None:
            return found
        cfg = self.config.deployments.get(ref)
        if cfg is None:
            provider, sep, model = ref.partition("/")
            if not sep or not model or provider not in self.providers:
                raise self._unknown(ref, asked)
            cfg = DeploymentConfig(ref, provider, model)
        elif cfg.provider not in self.providers:
            raise ConfigError(f"[models.deployments.{ref}] provider {cfg.provider!r} is not configured")
        dep = Deployment(
            cfg.name,
            cfg.provider,
            cfg.model,
            cfg.rpm,
            cfg.tpm,
            cfg.weight,
            CircuitBreaker(self.config.breaker, self._clock),
        )
        self._deployments[ref] = dep
        return dep

    def _unknown(self, ref: str, asked: str) -> UnknownModel:
        names = sorted(set(self.config.aliases) | set(self.config.deployments))
        via = "" if ref == asked else f" (reached from {asked!r})"
        hint = f"known aliases and deployments: {', '.join(names)}; " if names else ""
        return UnknownModel(
            f"unknown model {ref!r}{via}: {hint}or use provider/model with a provider among "
            f"{', '.join(sorted(self.providers))}"
        )
