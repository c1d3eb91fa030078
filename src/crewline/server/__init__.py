"""The HTTP server: REST API, webhooks and health checks over one :class:`~crewline.App`.

``create_app(app)`` builds the ASGI application; ``crewline serve`` runs it on uvicorn together with
in-process workers. FastAPI is imported only when the server is built, so the CLI stays quick.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import create_app
    from .config import ServerConfig

__all__ = ["ServerConfig", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from .app import create_app

        return create_app
    if name == "ServerConfig":
        from .config import ServerConfig

        return ServerConfig
    raise AttributeError(name)
