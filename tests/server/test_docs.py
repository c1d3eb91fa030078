"""What a newcomer meets first: the README's curl, the docs page offline, the whole API in the schema."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from .conftest import Api

START = {"workflow": "order", "input": {"id": "o1", "amount": 21}}


@pytest.mark.parametrize(
    "content_type", [None, "application/x-www-form-urlencoded", "text/plain", "application/json"]
)
def test_a_json_body_starts_a_run_whatever_content_type_the_client_guessed(
    api: Api, content_type: str | None
) -> None:
    headers = {} if content_type is None else {"Content-Type": content_type}
    r = api.http.post("/api/v1/runs", content=json.dumps(START).encode(), headers=headers)
    assert r.status_code == 201, r.text
    assert api.wait_status(r.json()["run_id"], "completed")["output"] == {"id": "o1", "total": 42}


def test_a_form_that_is_not_json_is_told_so(api: Api) -> None:
    r = api.http.post("/api/v1/runs", content=b"workflow=order", headers={"Content-Type": "text/plain"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_the_readme_curl_starts_a_run(api: Api) -> None:
    auth = f"Authorization: Bearer {api.admin}"
    command = ["curl", "-s", "-H", auth, "-d", json.dumps(START), f"{api.url}/api/v1/runs"]
    out = subprocess.run(command, capture_output=True, text=True, check=True)
    assert "run_id" in json.loads(out.stdout), out.stdout


def test_the_docs_page_loads_its_assets_from_the_server(api: Api) -> None:
    page = api.http.get("/docs")
    assert page.status_code == 200
    assets = re.findall(r"""(?:src|href)=['"]([^'"]+)['"]""", page.text)
    assert assets and not [a for a in assets if "://" in a]  # nothing from a CDN
    for url in assets:
        assert api.http.get(url).status_code == 200, url
    assert api.http.get("/redoc").status_code == 404


def test_the_schema_describes_the_proxy_routes(api: Api) -> None:
    paths = api.http.get("/openapi.json").json()["paths"]
    routes = {
        "/v1/chat/completions": "post",
        "/v1/embeddings": "post",
        "/v1/models": "get",
        "/v1/messages": "post",
    }
    for path, method in routes.items():
        assert method in paths[path], path
    assert paths["/v1/chat/completions"]["post"]["requestBody"]["content"]["application/json"]
