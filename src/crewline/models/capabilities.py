"""What a model name can be asked to do, read from configuration alone (no key, no request, no process).

Every name answers chat; ``embeddings`` is listed when every deployment the name routes to is served by
an adapter that embeds, so a client can tell in advance which names ``/v1/embeddings`` accepts.
"""

from __future__ import annotations

from ..errors import ConfigError
from .config import ModelsConfig
from .providers import adapter_class
from .routing import Route

__all__ = ["capabilities"]


def capabilities(config: ModelsConfig, route: Route) -> list[str]:
    """``["chat"]`` or ``["chat", "embeddings"]`` for the deployments of ``route``."""
    embeds = bool(route.deployments) and all(_embeds(config, d.provider) for d in route.deployments)
    return ["chat", "embeddings"] if embeds else ["chat"]


def _embeds(config: ModelsConfig, provider: str) -> bool:
    cfg = config.providers.get(provider)
    if cfg is None:
        return False
    try:
        return adapter_class(cfg.format).embeds(cfg.options)
    except ConfigError:  # a format no adapter speaks: calls to it fail with that error, so no embeddings
        return False
