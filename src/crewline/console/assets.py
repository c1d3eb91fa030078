"""The console's static files, served from the package under a content hash: ``/static/<hash>/<file>``.

A URL names one exact content, so browsers may keep it for a year; a new release changes the hash and so
the URL. A request with an old hash still gets the current file, uncached, so a page rendered before an
upgrade keeps working. Only files in the package's ``static/`` directory can be named.
"""

from __future__ import annotations

import hashlib
import mimetypes
from dataclasses import dataclass
from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import Response

__all__ = ["PREFIX", "STATIC", "Assets"]

PREFIX = "/static"
STATIC = Path(__file__).with_name("static")
_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".md": "text/plain"}
_FOREVER = "public, max-age=31536000, immutable"


@dataclass(frozen=True)
class _File:
    body: bytes
    digest: str
    media_type: str


class Assets:
    """The files of ``root`` read once, each with the hash its URL carries."""

    def __init__(self, root: Path = STATIC) -> None:
        self._files: dict[str, _File] = {}
        for path in sorted(root.rglob("*")):
            if path.is_file():
                body = path.read_bytes()
                name = path.relative_to(root).as_posix()
                media = _TYPES.get(path.suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream"
                self._files[name] = _File(body, hashlib.sha256(body).hexdigest()[:16], media)

    def url(self, name: str) -> str:
        """The URL of a static file, for templates: ``{{ static('console.css') }}``."""
        return f"{PREFIX}/{self._files[name].digest}/{name}"

    def router(self) -> APIRouter:
        router = APIRouter(include_in_schema=False)

        @router.get(PREFIX + "/{digest}/{name:path}")
        async def static_file(digest: str, name: str) -> Response:
            found = self._files.get(name)
            if found is None:
                raise HTTPException(404, f"no console file {name!r}")
            cache = _FOREVER if digest == found.digest else "no-cache"
            headers = {
                "Cache-Control": cache,
                "ETag": f'"{found.digest}"',
                "X-Content-Type-Options": "nosniff",
            }
            return Response(found.body, media_type=found.media_type, headers=headers)

        return router
