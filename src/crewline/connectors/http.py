"""The HTTP/REST connector (``type = "http"``): a base URL, an auth profile, and typed operations.

Operations are declared in Python, next to the workflow that uses them::

    get_contact = HttpOperation("get_contact", "read", ContactId, CrmContact, method="GET",
                                path="/contacts/{id}")

Path placeholders are filled from the arguments of the same name; the other arguments are the query of a
``GET``/``DELETE`` and the JSON body of any other method. A write (any method but ``GET``/``HEAD``)
carries an ``Idempotency-Key`` header holding the step's key, so a step run again after a crash sends the
same key and a server that honours it does the write once. A ``map`` (:class:`~.mapping.FieldMap`)
turns the answer into a canonical record.

Auth profiles (``[connectors.NAME.auth] kind = ...``): ``bearer``, ``basic``, ``header`` (any header, e.g.
``X-Api-Key``), ``oauth2_client_credentials`` and ``oauth2_refresh_token``. OAuth tokens live in memory only;
their expiry is tracked and they are fetched again shortly before it, and once more when the API answers
401 anyway (revoked, clock skew). Static credentials are resolved on each request, so a rotated secret is
used at once.

Retries here are only the ones the server asks for: a 429 or 503 with ``Retry-After`` is asked again after
that delay, at most ``retries`` times and only when the delay is within ``max_retry_after``. Anything
else (a timeout, a refused connection, a 5xx, a 429 without a delay) raises a retryable
:class:`~crewline.errors.ConnectorError` and the step's retry policy decides, so retries have one home.
Answers larger than ``max_response_bytes`` are cut off while reading, never buffered whole.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal
from urllib.parse import quote

import httpx
import pydantic

from ..config import check_header_value, check_http_url, parse_duration, parse_size
from ..errors import (
    ConfigError,
    ConnectorAuthError,
    ConnectorError,
    ConnectorRateLimited,
    ConnectorRejected,
    ConnectorTimeout,
    ConnectorUnavailable,
    ResponseTooLarge,
)
from ..secret_store import Credentials
from ..store.payloads import parse_json
from .base import ConnectorSettings, ConnectorSetup, ConnectorType, CredentialRef, OperationSpec
from .mapping import FieldMap

__all__ = ["CONNECTOR", "HttpConnector", "HttpOperation", "HttpSettings"]

_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE"})
_READS = frozenset({"GET", "HEAD", "OPTIONS"})
_QUERY_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "DELETE"})
# A token is fetched again this long before it expires (or at a tenth of its lifetime, if shorter).
_REFRESH_MARGIN = 30.0


class _Auth(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)


class BearerAuth(_Auth):
    kind: Literal["bearer"]
    token: CredentialRef


class BasicAuth(_Auth):
    kind: Literal["basic"]
    username: str
    password: CredentialRef


class HeaderAuth(_Auth):
    kind: Literal["header"]
    header: str
    value: CredentialRef


class ClientCredentialsAuth(_Auth):
    kind: Literal["oauth2_client_credentials"]
    token_url: str
    client_id: str
    client_secret: CredentialRef
    scope: str | None = None


class RefreshTokenAuth(_Auth):
    kind: Literal["oauth2_refresh_token"]
    token_url: str
    client_id: str
    refresh_token: CredentialRef
    client_secret: CredentialRef | None = None
    scope: str | None = None


Auth = Annotated[
    BearerAuth | BasicAuth | HeaderAuth | ClientCredentialsAuth | RefreshTokenAuth,
    pydantic.Field(discriminator="kind"),
]


def _duration(value: object) -> float:
    if not isinstance(value, str | int | float):
        raise ValueError("must be a duration like '30s' or a number of seconds")
    try:
        return parse_duration(value)
    except ConfigError as e:
        raise ValueError(str(e)) from None


def _size(value: object) -> int:
    if not isinstance(value, str | int):
        raise ValueError("must be a number of bytes or a size like '1MB'")
    try:
        return parse_size(value, "it")
    except ConfigError as e:
        raise ValueError(str(e)) from None


def _base_url(value: object) -> str:
    try:
        return check_http_url(value, example="https://api.example.com/v1").rstrip("/")
    except ConfigError as e:
        raise ValueError(str(e)) from None


_CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "x-api-key", "api-key"})


def _plain_headers(headers: dict[str, str]) -> dict[str, str]:
    """Static headers are plain text in crewline.toml: the ones that carry credentials belong in ``auth``."""
    for name, value in headers.items():
        try:
            check_header_value(name, value, "headers")
        except ConfigError as e:
            raise ValueError(str(e)) from None
        if name.lower() in _CREDENTIAL_HEADERS:
            raise ValueError(
                f'{name} carries a credential: use auth = {{ kind = "header", header = "{name}", '
                'value = "secret:NAME" } (or kind bearer/basic) instead'
            )
    return headers


class HttpSettings(ConnectorSettings):
    """``[connectors.NAME]`` of ``type = "http"``."""

    type: Literal["http"]
    base_url: Annotated[str, pydantic.BeforeValidator(_base_url)]
    auth: Auth | None = None
    headers: Annotated[dict[str, str], pydantic.AfterValidator(_plain_headers)] = pydantic.Field(
        default_factory=dict
    )
    timeout: Annotated[float, pydantic.BeforeValidator(_duration)] = 30.0
    connect_timeout: Annotated[float, pydantic.BeforeValidator(_duration)] = 10.0
    max_response_bytes: Annotated[int, pydantic.BeforeValidator(_size)] = 10 * 1024 * 1024
    retries: Annotated[int, pydantic.Field(ge=0, le=10)] = 2
    max_retry_after: Annotated[float, pydantic.BeforeValidator(_duration)] = 60.0


@dataclass(frozen=True)
class HttpOperation(OperationSpec):
    """A typed HTTP operation: ``method`` on ``path`` (``{field}`` filled from the arguments)."""

    method: str = "GET"
    path: str = "/"
    map: FieldMap | None = None  # the answer (or each item of a list answer) as a canonical record

    def __post_init__(self) -> None:
        if self.method.upper() not in _METHODS:
            raise TypeError(f"HttpOperation {self.name}: method must be one of {', '.join(sorted(_METHODS))}")
        if self.map is not None and self.result is None:
            object.__setattr__(self, "result", self.map.result)  # a replay reads the records back


@dataclass
class _Token:
    value: str
    expires_at: float  # time.monotonic() after which it is fetched again


@dataclass(frozen=True)
class _Request:
    spec: HttpOperation
    method: str
    path: str
    params: dict[str, Any] | None
    body: Any
    idempotency_key: str


class HttpConnector:
    """One ``type = "http"`` connector: a pooled client, an auth profile, typed operations."""

    def __init__(self, setup: ConnectorSetup) -> None:
        if not isinstance(setup.settings, HttpSettings):
            raise ConfigError(f"[connectors.{setup.name}] is not an http connector")
        self._name = setup.name
        self.settings = setup.settings
        self._credentials = setup.credentials
        timeout = httpx.Timeout(self.settings.timeout, connect=self.settings.connect_timeout)
        # trust_env off: an operator's HTTP(S)_PROXY must not silently receive the API's credentials.
        self._client = httpx.AsyncClient(timeout=timeout, trust_env=False, follow_redirects=False)
        self._token: _Token | None = None
        self._token_lock = asyncio.Lock()
        self._refresh_token: str | None = None  # a rotated refresh token the server handed back

    @property
    def name(self) -> str:
        return self._name

    def operations(self) -> Mapping[str, OperationSpec]:
        return {}  # an HTTP API's operations are declared by the workflow (HttpOperation)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def invoke(self, spec: OperationSpec, arguments: pydantic.BaseModel, idempotency_key: str) -> Any:
        if not isinstance(spec, HttpOperation):
            raise ConnectorRejected(self._name, f"operation {spec.name!r} is not an HttpOperation")
        request = self._request(spec, arguments.model_dump(mode="json"), idempotency_key)
        data = await self._send(request)
        return data if spec.map is None else spec.map.apply(data, source=self._name)

    def _request(self, spec: HttpOperation, fields: dict[str, Any], key: str) -> _Request:
        method = spec.method.upper()
        rest = dict(fields)
        path = spec.path
        for name in list(rest):
            placeholder = "{" + name + "}"
            if placeholder in path:
                path = path.replace(placeholder, quote(str(rest.pop(name)), safe=""))
        if method in _QUERY_METHODS:
            params = {k: v for k, v in rest.items() if v is not None}
            return _Request(spec, method, path, params or None, None, key)
        return _Request(spec, method, path, None, rest, key)

    # -- sending ---------------------------------------------------------------------------------------

    async def _send(self, request: _Request) -> Any:
        refreshed = False
        waits = 0
        while True:
            response, body = await self._exchange(request)
            status = response.status_code
            if status == 401 and self._is_oauth() and not refreshed:
                refreshed = True  # the token may be revoked or the clocks disagree: one new one, once
                self._token = None
                continue
            delay = _retry_after(response)
            if status in (429, 503) and self._may_wait(delay, waits):
                waits += 1
                await asyncio.sleep(delay or 0.0)
                continue
            if status >= 400:
                raise self._refusal(request, status, body, delay)
            return self._decode(request, response, body)

    def _may_wait(self, delay: float | None, waits: int) -> bool:
        """Whether to ask again after the server's ``Retry-After``: only a delay it gave, within bounds."""
        return delay is not None and waits < self.settings.retries and delay <= self.settings.max_retry_after

    async def _exchange(self, request: _Request) -> tuple[httpx.Response, bytes]:
        headers = {**self.settings.headers, **await self._auth_headers()}
        if request.method not in _READS:
            headers["Idempotency-Key"] = request.idempotency_key
        what = f"{request.method} {request.path}"
        try:
            async with self._client.stream(
                request.method,
                self.settings.base_url + request.path,
                params=request.params,
                json=request.body,
                headers=headers,
            ) as response:
                return response, await self._read(response, what)
        except httpx.TimeoutException as e:
            raise ConnectorTimeout(
                self._name,
                f"{what} got no answer within {self.settings.timeout:g}s; check that the API is up, or raise "
                f"[connectors.{self._name}] timeout",
            ) from e
        except httpx.TransportError as e:
            raise ConnectorUnavailable(
                self._name,
                f"{what} could not reach the API ({type(e).__name__}); check [connectors.{self._name}] base_url "
                "and that the API is up",
            ) from e

    async def _read(self, response: httpx.Response, what: str) -> bytes:
        limit = self.settings.max_response_bytes
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise self._too_large(what, limit)
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > limit:
                raise self._too_large(what, limit)
            chunks.append(chunk)
        return b"".join(chunks)

    def _too_large(self, what: str, limit: int) -> ResponseTooLarge:
        return ResponseTooLarge(
            self._name,
            f"the answer to {what} is larger than max_response_bytes ({limit} bytes); ask for less "
            f"(a page, a filter) or raise [connectors.{self._name}] max_response_bytes",
        )

    def _decode(self, request: _Request, response: httpx.Response, body: bytes) -> Any:
        if not body.strip():
            return None
        if "json" not in response.headers.get("content-type", "json"):
            return body.decode("utf-8", "replace")
        try:
            return parse_json(body, f"the answer to {request.method} {request.path}")
        except Exception as e:
            raise ConnectorError(self._name, f"{e}; the API did not answer JSON") from None

    def _refusal(self, request: _Request, status: int, body: bytes, delay: float | None) -> ConnectorError:
        what = f"{request.method} {request.path}"
        said = _said(body)
        if status in (401, 403):
            return ConnectorAuthError(
                self._name,
                f"{what} was refused ({status}{said}); check the credentials of [connectors.{self._name}] "
                f"auth ({self._auth_where()})",
                status=status,
            )
        if status == 429:
            wait = "" if delay is None else f" (it asked to wait {delay:g}s)"
            return ConnectorRateLimited(
                self._name,
                f"{what} was rate limited{wait}; the step retries by its policy",
                retry_after=delay,
            )
        if status >= 500:
            return ConnectorUnavailable(
                self._name, f"{what} failed on the API's side ({status}{said})", status=status
            )
        return ConnectorRejected(self._name, f"{what} was refused ({status}{said})", status=status)

    # -- auth ------------------------------------------------------------------------------------------

    def _is_oauth(self) -> bool:
        return isinstance(self.settings.auth, ClientCredentialsAuth | RefreshTokenAuth)

    def _auth_where(self) -> str:
        auth = self.settings.auth
        if auth is None:
            return "none configured"
        refs = [f"{k} = {v}" for k, v in auth.model_dump().items() if k in _REF_FIELDS and v is not None]
        return f"kind = {auth.kind}" + (f", {', '.join(refs)}" if refs else "")

    async def _resolve(self, ref: str, field: str) -> str:
        value = await self._credentials.resolve(ref, f"[connectors.{self._name}] auth.{field}")
        return value.reveal()

    async def _auth_headers(self) -> dict[str, str]:
        auth = self.settings.auth
        if auth is None:
            return {}
        if isinstance(auth, BearerAuth):
            return {"Authorization": f"Bearer {await self._resolve(auth.token, 'token')}"}
        if isinstance(auth, BasicAuth):
            pair = f"{auth.username}:{await self._resolve(auth.password, 'password')}".encode()
            return {"Authorization": "Basic " + base64.b64encode(pair).decode("ascii")}
        if isinstance(auth, HeaderAuth):
            return {auth.header: await self._resolve(auth.value, "value")}
        return {"Authorization": f"Bearer {await self._access_token(auth)}"}

    async def _access_token(self, auth: ClientCredentialsAuth | RefreshTokenAuth) -> str:
        async with self._token_lock:  # concurrent calls share one token request
            token = self._token
            if token is None or time.monotonic() >= token.expires_at:
                token = self._token = await self._fetch_token(auth)
            return token.value

    async def _fetch_token(self, auth: ClientCredentialsAuth | RefreshTokenAuth) -> _Token:
        form = {"client_id": auth.client_id}
        if isinstance(auth, ClientCredentialsAuth):
            form["grant_type"] = "client_credentials"
            form["client_secret"] = await self._resolve(auth.client_secret, "client_secret")
        else:
            form["grant_type"] = "refresh_token"
            form["refresh_token"] = self._refresh_token or await self._resolve(
                auth.refresh_token, "refresh_token"
            )
            if auth.client_secret is not None:
                form["client_secret"] = await self._resolve(auth.client_secret, "client_secret")
        if auth.scope:
            form["scope"] = auth.scope
        try:
            response = await self._client.post(auth.token_url, data=form)
        except httpx.HTTPError as e:
            raise ConnectorUnavailable(
                self._name,
                f"the token endpoint could not be reached ({type(e).__name__}); check auth.token_url",
            ) from e
        return self._token_of(response)

    def _token_of(self, response: httpx.Response) -> _Token:
        said = _said(response.content)
        if response.status_code >= 500:
            raise ConnectorUnavailable(
                self._name, f"the token endpoint failed ({response.status_code}{said})"
            )
        try:
            data = response.json() if response.status_code < 400 else None
        except ValueError:
            data = None
        if not isinstance(data, dict) or not isinstance(data.get("access_token"), str):
            raise ConnectorAuthError(
                self._name,
                f"the token endpoint refused the grant ({response.status_code}{said}); check "
                f"[connectors.{self._name}] auth ({self._auth_where()})",
                status=response.status_code,
            )
        if isinstance(data.get("refresh_token"), str):
            self._refresh_token = data["refresh_token"]
        given = data.get("expires_in")
        lifetime = float(given) if isinstance(given, int | float) and given >= 0 else 3600.0
        margin = min(_REFRESH_MARGIN, lifetime / 10)
        return _Token(data["access_token"], time.monotonic() + lifetime - margin)


def _retry_after(response: httpx.Response) -> float | None:
    raw = response.headers.get("retry-after", "").strip()
    try:
        return max(0.0, float(raw)) if raw else None
    except ValueError:
        return None  # an HTTP date: rare from APIs; the step's backoff applies instead


def _said(body: bytes) -> str:
    """What an error answer said, briefly: an OAuth or API ``error`` code, never the whole body (it may
    echo what was sent)."""
    try:
        data = parse_json(body, "an error answer")
    except Exception:
        return ""
    if isinstance(data, dict):
        for key in ("error", "code", "message"):
            value = data.get(key)
            if isinstance(value, str) and len(value) <= 80:
                return f": {value}"
            if isinstance(value, dict) and isinstance(value.get("message"), str):
                return f": {value['message'][:80]}"
    return ""


_REF_FIELDS = frozenset({"token", "password", "value", "client_secret", "refresh_token"})


def _problems(name: str, settings: ConnectorSettings, credentials: Credentials) -> list[str]:
    if not isinstance(settings, HttpSettings) or settings.auth is None:
        return []
    auth = settings.auth
    return [
        problem
        for field, value in auth.model_dump().items()
        if isinstance(value, str) and field in _REF_FIELDS
        for problem in credentials.problems(value, f"[connectors.{name}] auth.{field}")
    ]


CONNECTOR = ConnectorType(HttpSettings, HttpConnector, _problems)
