"""Errors as HTTP answers: every failure is JSON ``{"error": {"type", "message"[, "details"]}}``.

Client mistakes get the 4xx that names them (400 malformed JSON, 401 no valid key, 403 wrong scope,
404, 409 conflicts, 413 oversize, 422 wrong shape or values, 429 rate limit); 503 with ``Retry-After``
means the database is unreachable (see :mod:`.outage`); 500 is kept for our own bugs and says only to look at the server log. Messages never
repeat a key or a secret.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import (
    BudgetExceeded,
    ConfigError,
    CrewlineError,
    DatabaseUnavailable,
    InvalidInput,
    InvalidRunState,
    MigrationError,
    PromotionRefused,
    ReviewNotFound,
    RunExists,
    RunNotFound,
    UnknownWorkflow,
    WorkflowDisabled,
)
from .outage import unavailable_headers, unavailable_message

__all__ = [
    "ERROR_RESPONSES",
    "ApiError",
    "BodyTooLarge",
    "ErrorBody",
    "client_error",
    "error_body",
    "install_handlers",
    "public_error",
]

log = logging.getLogger("crewline.server")

_STATUS_TYPES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "rate_limited",
    503: "unavailable",
}

# crewline errors a client can cause, with the status and type they answer with.
_CREWLINE: tuple[tuple[type[CrewlineError], int, str], ...] = (
    (RunNotFound, 404, "run_not_found"),
    (ReviewNotFound, 404, "review_not_found"),
    (UnknownWorkflow, 422, "unknown_workflow"),
    (WorkflowDisabled, 409, "workflow_disabled"),
    (RunExists, 409, "run_exists"),
    (InvalidRunState, 409, "invalid_run_state"),
    (InvalidInput, 422, "invalid_input"),
    (BudgetExceeded, 402, "budget_exceeded"),
    (PromotionRefused, 409, "promotion_refused"),
    (DatabaseUnavailable, 503, "database_unavailable"),
    (MigrationError, 503, "schema_not_current"),
)


class ErrorDetail(BaseModel):
    type: str = Field(description="What kind of error, e.g. forbidden, run_not_found, invalid_request.")
    message: str = Field(description="What was wrong and what to do about it.")
    details: list[Any] | None = Field(default=None, description="With 422: each invalid field.")


class ErrorBody(BaseModel):
    """The body of every error answer."""

    error: ErrorDetail


def _documented(description: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description}


# The errors any operation of the API may answer, declared once so the schema says what clients get
# (a route adds its own descriptions on top). 422 replaces FastAPI's default shape, which we never send.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _documented("Malformed request, e.g. a body that is not JSON."),
    401: _documented("No API key, or one that is not valid, expired or revoked."),
    403: _documented("The key's scope may not do this."),
    404: _documented("No such run, review, flag or key."),
    409: _documented("The run, review or workflow is not in a state that allows this."),
    413: _documented("The body is over the server's max_body."),
    422: _documented("The request's fields are not valid; details names each."),
    429: _documented("Too many requests for the key, or too many failed authentications; see Retry-After."),
    503: _documented("The database cannot be reached; retry after Retry-After."),
}


class ApiError(Exception):
    """Raised by routes to answer with ``status`` and a JSON error body."""

    def __init__(
        self, status: int, type_: str, message: str, *, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type = type_
        self.message = message
        self.headers = dict(headers or {})


class BodyTooLarge(HTTPException):
    """The request body passed its size limit (an HTTPException so body parsing lets it through)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body is larger than the limit of {limit} bytes")
        self.limit = limit


# An absolute file path (POSIX, or Windows with a drive letter) with at least two parts; a URL's path
# follows "host", not a space or quote, so it is left alone.
_PATH = re.compile(r"""(?<![\w:/.~-])(?:[A-Za-z]:[\\/]|/)(?:[^\s'"/\\:]+[\\/])+[^\s'":,)]*""")


def public_error(error: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A run's or step's recorded error as an API answer shows it: type and message, with no traceback
    and no file paths of the server (operators read those in the log or with `crewline runs show`)."""
    if error is None:
        return None
    message = _PATH.sub("<path>", str(error.get("message", "")))
    return {"type": str(error.get("type", "Error")), "message": message}


def error_body(type_: str, message: str, details: Sequence[Any] | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"type": type_, "message": message}
    if details:
        error["details"] = list(details)
    return {"error": error}


def _respond(
    status: int, type_: str, message: str, details: Sequence[Any] | None = None, headers: Any = None
) -> JSONResponse:
    return JSONResponse(error_body(type_, message, details), status_code=status, headers=headers)


def _where(loc: Sequence[Any]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        head, rest = parts[0], parts[1:]
        return f"{head} {'.'.join(rest)}" if rest else head
    return ".".join(parts)


async def _validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    bad_json = next((e for e in errors if e.get("type") == "json_invalid"), None)
    if bad_json is not None:
        reason = (bad_json.get("ctx") or {}).get("error", "cannot be parsed")
        return _respond(400, "malformed_json", f"request body is not valid JSON: {reason}")
    # Leave out the offending input itself: it may be large, or hold something secret.
    details = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in errors]
    summary = "; ".join(f"{_where(d['loc'])}: {d['msg']}" for d in details[:5])
    return _respond(422, "invalid_request", f"request is not valid: {summary}", details)


async def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    if exc.status_code == 404 and message == "Not Found":
        message = f"no route {request.method} {request.url.path}; the API is described at /openapi.json"
    return _respond(
        exc.status_code, _STATUS_TYPES.get(exc.status_code, "error"), message, headers=exc.headers
    )


async def _api(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return _respond(exc.status, exc.type, exc.message, headers=exc.headers or None)


async def _crewline(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, DatabaseUnavailable):
        log.debug("%s %s: %s", request.method, request.url.path, exc)
        return _respond(503, "database_unavailable", unavailable_message(), headers=unavailable_headers())
    for cls, status, type_ in _CREWLINE:
        if isinstance(exc, cls):
            if status >= 500:
                log.warning("%s %s: %s", request.method, request.url.path, exc)
            return _respond(status, type_, str(exc))
    if isinstance(exc, ConfigError):
        log.error("configuration error serving %s %s: %s", request.method, request.url.path, exc)
        return _respond(500, "config_error", str(exc))
    return await _unexpected(request, exc)


def client_error(exc: CrewlineError) -> str | None:
    """What to tell a client about an error it can cause (one HTTP answers with a 4xx or 503); None for
    a failure of the server's own, whose details belong in its log."""
    return str(exc) if any(isinstance(exc, cls) for cls, _, _ in _CREWLINE) else None


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("error serving %s %s", request.method, request.url.path, exc_info=exc)
    return _respond(500, "internal_error", "the server failed on this request; details are in its log")


def install_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(ApiError, _api)
    app.add_exception_handler(CrewlineError, _crewline)
    app.add_exception_handler(Exception, _unexpected)
