"""A connector type for tests of the registry and the step kind: it counts its calls in process and keeps
the idempotency key and credential each call saw (its "remote side" is this list)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import pydantic

from crewline.connectors.base import (
    ConnectorSettings,
    ConnectorSetup,
    ConnectorType,
    CredentialRef,
    OperationSpec,
)
from crewline.secret_store import Credentials

CALLS: list[dict[str, Any]] = []


class CountingSettings(ConnectorSettings):
    type: Literal["counting"]
    token: CredentialRef
    start: int = 0


class Bump(pydantic.BaseModel):
    n: int = 1


class Total(pydantic.BaseModel):
    total: int


BUMP = OperationSpec("bump", "idempotent", Bump, Total, "Add n to the counter.")
SEND = OperationSpec("send", "irreversible", Bump, None, "Send n (cannot be undone).")


class Counting:
    def __init__(self, setup: ConnectorSetup) -> None:
        assert isinstance(setup.settings, CountingSettings)
        self.name = setup.name
        self._settings = setup.settings
        self._credentials = setup.credentials
        self.total = setup.settings.start
        self.closed = False

    def operations(self) -> Mapping[str, OperationSpec]:
        return {"bump": BUMP, "send": SEND}

    async def invoke(self, spec: OperationSpec, arguments: pydantic.BaseModel, idempotency_key: str) -> Any:
        token = await self._credentials.resolve(self._settings.token, f"[connectors.{self.name}] token")
        assert isinstance(arguments, Bump)
        self.total += arguments.n
        CALLS.append({"op": spec.name, "key": idempotency_key, "token": token.reveal(), "n": arguments.n})
        return Total(total=self.total)

    async def aclose(self) -> None:
        self.closed = True


def _problems(name: str, settings: ConnectorSettings, credentials: Credentials) -> list[str]:
    assert isinstance(settings, CountingSettings)
    return credentials.problems(settings.token, f"[connectors.{name}] token")


CONNECTOR = ConnectorType(CountingSettings, Counting, _problems)
