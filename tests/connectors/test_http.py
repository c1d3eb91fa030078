"""The HTTP connector against a loopback CRM: typed operations mapped to canonical records, auth profiles
with OAuth tokens refreshed before they expire and once on a 401, Retry-After, the Idempotency-Key of a
write repeated when the step is, size limits and timeouts, and no credential anywhere it could leak."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pydantic
import pytest

from crewline import App, Context, RetryPolicy, Settings
from crewline.connectors.http import HttpOperation
from crewline.connectors.mapping import FieldMap
from crewline.connectors.records import Contact
from crewline.flows.step_connector import ConnectorCall

from .._leaks import logged, stored_at
from ..flows._drive import drive
from ._crm import CLIENT_SECRET, FIRST_REFRESH, STATIC_TOKEN, FakeCrm, serving_crm


class ContactId(pydantic.BaseModel):
    id: str


class NewNote(pydantic.BaseModel):
    contact_id: str
    text: str


class Nothing(pydantic.BaseModel):
    pass


class Big(pydantic.BaseModel):
    chunked: bool = False


CONTACT = FieldMap(
    Contact,
    {
        "source_id": "id",
        "name": "properties.full_name",
        "email": "properties.email",
        "company": "company.name",
    },
)
GET_CONTACT = HttpOperation(
    "get_contact", "read", ContactId, method="GET", path="/contacts/{id}", map=CONTACT
)
ADD_NOTE = HttpOperation(
    "add_note", "idempotent", NewNote, method="POST", path="/notes", description="Add a note"
)
LIMITED = HttpOperation("limited", "read", Nothing, path="/limited")
BIG = HttpOperation("big", "read", Big, path="/big")
SLOW = HttpOperation("slow", "read", Nothing, path="/slow")

ADA = {
    "id": 42,
    "properties": {"full_name": "Ada Lovelace", "email": "ada@example.com"},
    "company": {"name": "Analytical Engines"},
    "lifecycle": "lead",
}


@pytest.fixture
def crm() -> Iterator[FakeCrm]:
    with serving_crm(FakeCrm(contacts={"42": ADA})) as server:
        yield server


def _app(db_url: str, crm: FakeCrm, **section: Any) -> App:
    table = {"type": "http", "base_url": crm.url, "timeout": "1s", **section}
    table.setdefault("auth", {"kind": "bearer", "token": "env:CRM_TOKEN"})
    app = App(db_url, settings=Settings(sections={"connectors": {"crm": table}}))

    @app.workflow()
    async def followup(ctx: Context, contact_id: str) -> Any:
        crm = ctx.connector("crm")
        contact: Contact = await crm.call(GET_CONTACT, id=contact_id)
        note = await crm.call(ADD_NOTE, contact_id=contact.source_id, text=f"Hello {contact.name}")
        return {"contact": contact.model_dump(mode="json"), "note": note["id"]}

    @app.workflow()
    async def one(ctx: Context, which: str) -> Any:
        op = {"limited": LIMITED, "big": BIG, "slow": SLOW}[which.split(":")[0]]
        args = {"chunked": True} if which.endswith(":chunked") else {}
        options = ConnectorCall(retry=RetryPolicy(max_attempts=3, initial_delay=0.0))
        return await ctx.connector("crm").call(op, args, options=options)

    return app


@pytest.fixture(autouse=True)
def crm_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRM_TOKEN", STATIC_TOKEN)
    monkeypatch.setenv("CRM_SECRET", CLIENT_SECRET)
    monkeypatch.setenv("CRM_REFRESH", FIRST_REFRESH)


async def test_a_typed_operation_reads_a_canonical_record_and_writes_with_an_idempotency_key(
    db_url: str, crm: FakeCrm, caplog: pytest.LogCaptureFixture
) -> None:
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from crewline.observe.traces import Tracer

    caplog.set_level(logging.DEBUG)
    app = _app(db_url, crm)
    spans = InMemorySpanExporter()
    tracer = Tracer(SimpleSpanProcessor(spans), capture_content=True)
    app.observers.add(tracer)
    try:
        rid = await app.start("followup", "42")
        run = await drive(app, rid)
        assert run.status == "completed", run.error
        assert run.output["contact"] == {
            "source": "crm",
            "source_id": "42",
            "extra": {"lifecycle": "lead"},
            "name": "Ada Lovelace",
            "email": "ada@example.com",
            "phone": None,
            "company": "Analytical Engines",
            "title": None,
            "owner": None,
            "tags": [],
            "updated_at": None,
        }
        steps = await app.steps(rid)
        assert [(s.name, s.effect) for s in steps] == [
            ("crm.get_contact", "read"),
            ("crm.add_note", "idempotent"),
        ]
        # The write carried the step's idempotency key, as the journal recorded it.
        assert crm.note_requests == [steps[1].input["idempotency_key"]]
        assert steps[1].input["arguments"] == {"contact_id": "42", "text": "Hello Ada Lovelace"}
        await app.aclose()
        assert STATIC_TOKEN not in stored_at(db_url)
        assert STATIC_TOKEN not in logged(caplog)
        assert tracer.flush()
        exported = spans.get_finished_spans()
        assert {"crm.get_contact", "crm.add_note"} <= {
            str(a) for sp in exported for a in sp.attributes.values()
        }
        assert STATIC_TOKEN not in "\n".join(sp.to_json() for sp in exported)
    finally:
        app.observers.remove(tracer)
        tracer.shutdown()
        app.close()


async def test_a_write_asked_again_after_a_timeout_sends_the_same_key_and_happens_once(
    db_url: str, crm: FakeCrm
) -> None:
    crm.slow_notes = 1  # the first write is done by the CRM, but its answer comes after the timeout
    app = _app(db_url, crm, timeout="0.5s")
    try:
        run = await drive(app, await app.start("followup", "42"))
        assert run.status == "completed", run.error
        assert len(crm.note_requests) == 2 and crm.note_requests[0] == crm.note_requests[1]
        assert len(crm.notes) == 1
    finally:
        app.close()


async def test_client_credentials_tokens_are_reused_refreshed_before_expiry_and_once_on_a_401(
    db_url: str, crm: FakeCrm
) -> None:
    auth = {
        "kind": "oauth2_client_credentials",
        "token_url": "",
        "client_id": "crewline-client",
        "client_secret": "env:CRM_SECRET",
    }
    auth["token_url"] = crm.url + "/oauth/token"
    app = _app(db_url, crm, auth=auth)
    try:
        assert (await drive(app, await app.start("followup", "42"))).status == "completed"
        assert crm.grants == ["client_credentials"] and crm.unauthorized == 0  # one token, two calls
        crm.revoke_all()  # the token stops working mid-run: a 401, one new token, the call again
        assert (await drive(app, await app.start("followup", "42"))).status == "completed"
        assert crm.grants == ["client_credentials"] * 2 and crm.unauthorized == 1
        # Tokens that expire at once: after the one 401 of the revocation, each call fetches a new token
        # before it is sent, and no stale token reaches the API.
        crm.expires_in = 0
        crm.revoke_all()
        assert (await drive(app, await app.start("followup", "42"))).status == "completed"
        assert (await drive(app, await app.start("followup", "42"))).status == "completed"
        assert crm.grants == ["client_credentials"] * 6 and crm.unauthorized == 2
    finally:
        app.close()


async def test_a_rotating_refresh_token_is_kept_in_memory(db_url: str, crm: FakeCrm) -> None:
    crm.expires_in = 0
    auth = {
        "kind": "oauth2_refresh_token",
        "token_url": crm.url + "/oauth/token",
        "client_id": "crewline-client",
        "refresh_token": "env:CRM_REFRESH",
    }
    app = _app(db_url, crm, auth=auth)
    try:
        run = await drive(app, await app.start("followup", "42"))
        assert run.status == "completed", run.error
        assert crm.grants == ["refresh_token", "refresh_token"] and crm.refresh_token != FIRST_REFRESH
    finally:
        app.close()


async def test_wrong_credentials_name_the_connector_and_reference_never_the_value(
    db_url: str, crm: FakeCrm, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRM_TOKEN", "wrong-token-5150")
    app = _app(db_url, crm)
    try:
        run = await drive(app, await app.start("followup", "42"))
        assert run.status == "failed"
        message = str((run.error or {}).get("message"))
        assert message == (
            "connector 'crm': GET /contacts/42 was refused (401: invalid_token); check the credentials of "
            "[connectors.crm] auth (kind = bearer, token = env:CRM_TOKEN)"
        )
        assert crm.unauthorized == 1  # an auth error is not retried
        steps = await app.steps(run.id)
        assert "wrong-token-5150" not in repr([(s.input, s.output, s.error) for s in steps])
    finally:
        app.close()


async def test_retry_after_is_honoured_within_bounds(db_url: str, crm: FakeCrm) -> None:
    crm.limited = 2
    app = _app(db_url, crm)
    try:
        run = await drive(app, await app.start("one", "limited"))
        assert run.output == {"ok": True} and crm.limited_seen == 3
        [step] = await app.steps(run.id)
        assert step.attempts == 1  # the connector waited as asked; the step did not fail
        # A wait longer than max_retry_after is not slept through: the step's policy takes over.
        crm.limited, crm.retry_after, crm.limited_seen = 5, "3600", 0
        run = await drive(app, await app.start("one", "limited"))
        assert run.status == "failed" and crm.limited_seen == 3  # one request per step attempt
        assert "was rate limited (it asked to wait 3600s)" in str(run.error)
    finally:
        app.close()


@pytest.mark.parametrize("which", ["big", "big:chunked"])
async def test_an_oversized_answer_is_cut_off_with_a_clear_error(
    db_url: str, crm: FakeCrm, which: str
) -> None:
    app = _app(db_url, crm, max_response_bytes="16KB")
    try:
        run = await drive(app, await app.start("one", which))
        assert run.status == "failed"
        assert str((run.error or {}).get("message")) == (
            "connector 'crm': the answer to GET /big is larger than max_response_bytes (16384 bytes); ask for "
            "less (a page, a filter) or raise [connectors.crm] max_response_bytes"
        )
        [step] = await app.steps(run.id)
        assert step.attempts == 1  # too large stays too large: not retried
    finally:
        app.close()


async def test_a_hanging_server_is_a_timeout_and_the_step_retries_by_its_policy(
    db_url: str, crm: FakeCrm
) -> None:
    crm.hang = 2
    app = _app(db_url, crm, timeout="0.3s")
    try:
        run = await drive(app, await app.start("one", "slow"))
        assert run.status == "completed" and run.output == {"ok": True, "seen": 3}
        [step] = await app.steps(run.id)
        assert step.attempts == 3
        crm.hang = 3
        run = await drive(app, await app.start("one", "slow"))
        assert run.status == "failed"
        assert (
            "GET /slow got no answer within 0.3s; check that the API is up, or raise [connectors.crm] timeout"
            in str(run.error)
        )
    finally:
        app.close()


async def test_operations_are_agent_tools_with_their_schema(db_url: str, crm: FakeCrm) -> None:
    app = _app(db_url, crm)

    @app.workflow()
    async def tools(ctx: Context) -> Any:
        made = ctx.connector("crm").tools(GET_CONTACT, ADD_NOTE)
        return [(t.name, t.effect, t.json_schema()["required"], t.description) for t in made]

    try:
        run = await drive(app, await app.start("tools"))
        assert run.output == [
            ["crm_get_contact", "read", ["id"], "get_contact on crm"],
            ["crm_add_note", "idempotent", ["contact_id", "text"], "Add a note"],
        ]
    finally:
        app.close()


def test_config_check_reads_http_sections_key_by_key() -> None:
    from crewline.connectors.registry import connectors_problems
    from crewline.secret_store import Credentials

    section = {
        "a": {"type": "http", "base_url": "ftp://x"},
        "b": {
            "type": "http",
            "base_url": "https://api.example.com",
            "auth": {"kind": "bearer", "token": "abc"},
        },
        "c": {"type": "http", "base_url": "https://api.example.com", "auth": {"kind": "oauth", "token": "x"}},
        "d": {
            "type": "http",
            "base_url": "https://x.example",
            "timeout": "soon",
            "max_response_bytes": "lots",
        },
        "e": {
            "type": "http",
            "base_url": "https://x.example",
            "auth": {"kind": "bearer", "token": "env:NOPE"},
        },
        "f": {
            "type": "http",
            "base_url": "https://x.example",
            "auth": {"kind": "bearer", "token": "secret:crm"},
        },
        "g": {"type": "http", "base_url": "https://x.example", "headers": {"X-Api-Key": "abc"}},
    }
    problems = connectors_problems(section, Credentials(None, None, {}))
    assert (
        problems[0]
        == "[connectors.a] base_url: must be an http:// or https:// URL, e.g. https://api.example.com/v1"
    )
    assert problems[1].startswith("[connectors.b] auth.bearer.token: it must be a credential reference")
    assert problems[2].startswith("[connectors.c] auth: Input tag 'oauth' found using 'kind' does not match")
    assert problems[3].startswith("[connectors.d] timeout: cannot read duration 'soon'")
    assert "max_response_bytes: cannot read it 'lots'" in problems[3]
    assert (
        problems[4]
        == "[connectors.e] auth.token: env:NOPE is not set; export NOPE or use secret:NAME instead"
    )
    assert problems[5].startswith("[connectors.f] auth.token: secret:crm needs the secrets key")
    assert problems[6] == (
        '[connectors.g] headers: X-Api-Key carries a credential: use auth = { kind = "header", '
        'header = "X-Api-Key", value = "secret:NAME" } (or kind bearer/basic) instead'
    )
    assert len(problems) == 7 and "abc" not in "\n".join(problems)


async def test_an_agent_calls_an_http_operation_as_a_tool(db_url: str, crm: FakeCrm) -> None:
    from crewline.models import Gateway, ModelsConfig
    from crewline.testing import FakeProvider

    app = _app(db_url, crm)

    @app.workflow()
    async def research(ctx: Context, goal: str) -> Any:
        tools = ctx.connector("crm").tools(GET_CONTACT)
        result = await ctx.agent(goal, tools=tools, model="fake/mid", max_steps=3)
        return {"status": result.status, "output": result.output, "calls": result.tool_calls}

    with FakeProvider(api_key="sk-test") as fake:
        table = {
            "providers": {
                "fake": {"format": "openai", "base_url": fake.url + "/v1", "api_key_env": "FAKE_KEY"}
            },
            "prices": {"fake/mid": {"input": 0, "output": 0}},
            "retry": {"attempts": 1},
        }
        app.engine.models = Gateway(ModelsConfig.parse(table), app.db, environ={"FAKE_KEY": "sk-test"})
        fake.reply(tool_calls=[("crm_get_contact", {"id": "42"})])
        fake.reply("Ada Lovelace works at Analytical Engines.")
        try:
            rid = await app.start("research", "Who is contact 42?")
            run = await drive(app, rid)
            assert run.output == {
                "status": "completed",
                "output": "Ada Lovelace works at Analytical Engines.",
                "calls": 1,
            }
            # The model saw the tool's schema, then the canonical record the CRM's JSON was mapped to.
            first = fake.requests[0].body
            assert first["tools"][0]["function"]["name"] == "crm_get_contact"
            assert '"company": "Analytical Engines"' in str(fake.requests[1].body["messages"]).replace(
                "'", '"'
            )
            steps = await app.steps(rid)
            assert [(s.kind, s.name) for s in steps] == [
                ("llm", "agent:turn"),
                ("tool", "crm_get_contact"),
                ("llm", "agent:turn"),
            ]
            assert steps[1].input == {"id": "42"} and steps[1].output["email"] == "ada@example.com"
        finally:
            await app.aclose()
            app.close()
