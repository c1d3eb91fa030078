"""The console on a real server: a browser-like httpx client that signs in with a key and keeps cookies."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from crewline.console import web

from ..server.conftest import Api, api, api_factory, hook_env

__all__ = ["Browser", "Clock", "api", "api_factory", "browser", "clock", "hook_env"]

_CSRF = re.compile(r'name="csrf" value="([^"]*)"')


class Browser:
    """Follows no redirects by itself, so each test sees where the console sends it; keeps every answer
    (to check that no key ever appears in one)."""

    def __init__(self, url: str) -> None:
        self.http = httpx.Client(base_url=url, timeout=30, follow_redirects=False)
        self.seen: list[httpx.Response] = []
        self.csrf = ""

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self._keep(self.http.get(path, **kwargs))

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self._keep(self.http.post(path, **kwargs))

    def _keep(self, response: httpx.Response) -> httpx.Response:
        self.seen.append(response)
        found = (
            _CSRF.search(response.text) if "text/html" in response.headers.get("content-type", "") else None
        )
        if found and found.group(1):
            self.csrf = found.group(1)
        return response

    def sign_in(self, key: str, next_: str | None = None) -> httpx.Response:
        form = self.get("/login", params={} if next_ is None else {"next": next_})
        found = _CSRF.search(form.text)
        assert found is not None, form.text
        data = {"key": key, "csrf": found.group(1), "next": next_ or "/"}
        return self.post("/login", data=data)

    def everything_seen(self) -> str:
        return "\n".join(f"{r.headers}\n{r.text}" for r in self.seen)


@pytest.fixture
def browser(api: Api) -> Iterator[Callable[[], Browser]]:
    made: list[Browser] = []

    def make() -> Browser:
        made.append(Browser(api.url))
        return made[-1]

    yield make
    for b in made:
        b.http.close()


class Clock:
    """The console's clock, moved forward by tests (sessions expire without waiting for hours)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def time(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(web, "time", fake)
    return fake
