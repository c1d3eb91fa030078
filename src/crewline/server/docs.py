"""``/docs``: Swagger UI served from the package, so the API's docs work on a machine with no internet.

The assets are swagger-ui-dist's, vendored in ``static/swagger-ui`` with their licence. ReDoc is off: it
would load from a CDN too, and one offline viewer is enough. The schema at ``/openapi.json`` also
describes the model proxy routes, which are plain endpoints outside FastAPI's request models.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from .proxy.openapi import proxy_paths

__all__ = ["ASSETS", "install_docs"]

ASSETS = "/docs/assets"
_STATIC = Path(__file__).with_name("static") / "swagger-ui"


def install_docs(api: FastAPI) -> None:
    """Serve Swagger UI at ``/docs`` from the package and add the proxy routes to the schema."""
    api.mount(ASSETS, StaticFiles(directory=_STATIC), name="docs-assets")

    @api.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=api.openapi_url or "/openapi.json",
            title=f"{api.title} API",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon-32x32.png",
        )

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is None:
            schema = FastAPI.openapi(api)
            schema["paths"].update(proxy_paths())
            api.openapi_schema = schema
        return api.openapi_schema

    api.openapi = openapi  # type: ignore[method-assign]
