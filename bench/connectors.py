"""What the connector layer costs per call, in process: resolving a credential reference, and an HTTP
connector operation (auth header, size-limited read, JSON, a field map to a record) beside the same
request sent with httpx directly, both to a minimal loopback server answering a fixed JSON contact.

    python bench/connectors.py [--calls 2000]

Prints microseconds of wall time per call (the server runs in the same event loop, so both figures
include it). A secret: reference reads its row on each resolve (that is what makes rotation take effect
without a restart); this shows what that read costs on SQLite.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pydantic

from crewline.config import Settings
from crewline.connectors.base import ConnectorSetup
from crewline.connectors.http import HttpConnector, HttpOperation, HttpSettings
from crewline.connectors.mapping import FieldMap
from crewline.connectors.records import Contact
from crewline.secret_store import Credentials, SecretStore, new_key, secrets_key
from crewline.store import open_database

BODY = b'{"id": 42, "properties": {"full_name": "Ada Lovelace", "email": "ada@example.com"}}'
REPLY = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (
    len(BODY),
    BODY,
)


class ContactId(pydantic.BaseModel):
    id: str


GET = HttpOperation(
    "get_contact",
    "read",
    ContactId,
    path="/contacts/{id}",
    map=FieldMap(Contact, {"source_id": "id", "name": "properties.full_name", "email": "properties.email"}),
)


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while await reader.readuntil(b"\r\n\r\n"):
            writer.write(REPLY)
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()


async def per_call(n: int, call: Callable[[], Awaitable[Any]]) -> float:
    for _ in range(50):
        await call()
    start = time.perf_counter()
    for _ in range(n):
        await call()
    return (time.perf_counter() - start) / n * 1e6


async def main(calls: int) -> None:
    key = new_key()
    db = open_database(f"sqlite:///{tempfile.mkdtemp()}/bench.db")
    await SecretStore(db, secrets_key(Settings(), {"CREWLINE_SECRETS_KEY": key})).set("crm", "tok-123")
    os.environ["BENCH_CRM_TOKEN"] = "tok-123"
    creds = Credentials(db, secrets_key(Settings(), {"CREWLINE_SECRETS_KEY": key}))
    print(
        f"resolve env:NAME      {await per_call(calls, lambda: creds.resolve('env:BENCH_CRM_TOKEN')):8.1f} us"
    )
    print(f"resolve secret:NAME   {await per_call(calls, lambda: creds.resolve('secret:crm')):8.1f} us")

    server = await asyncio.start_server(_serve, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    for ref in ("env:BENCH_CRM_TOKEN", "secret:crm"):
        settings = HttpSettings.model_validate(
            {"type": "http", "base_url": url, "auth": {"kind": "bearer", "token": ref}}
        )
        connector = HttpConnector(ConnectorSetup("crm", settings, creds))
        took = await per_call(calls, lambda c=connector: c.invoke(GET, ContactId(id="42"), "k"))
        print(f"connector call ({ref.split(':')[0]:6}) {took:8.1f} us")
        await connector.aclose()
    async with httpx.AsyncClient() as client:

        async def raw() -> None:
            response = await client.get(url + "/contacts/42", headers={"Authorization": "Bearer tok-123"})
            Contact.model_validate({"name": response.json()["properties"]["full_name"]})

        print(f"httpx directly        {await per_call(calls, raw):8.1f} us")
    await asyncio.sleep(0.1)  # the handlers see their clients' EOF and end
    server.close()
    await server.wait_closed()
    db.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    asyncio.run(main(parser.parse_args().calls))
