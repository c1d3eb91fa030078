"""``ctx.connector(name)``: a connector's operations as durable steps, and as tools for agents.

Each call is a ``ctx.step`` named ``<connector>.<operation>`` with the operation's effect. Its recorded
input is the :class:`~crewline.connectors.base.Operation` (connector, operation, effect, idempotency key,
arguments): never a credential, which the connector resolves itself when it goes on the wire. The
idempotency key is the step's (``<run id>:<step>`` unless given), so a step that runs again after a crash
sends the remote side the same key; a replay returns the recorded result and calls nothing. The result is
recorded as JSON and validated into the operation's result type on the way out, live or replayed.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, cast

import pydantic
import pydantic_core

from ..connectors.base import Connector, Discovering, Operation, OperationSpec, Reconciling
from ..errors import InvalidInput
from ..store.payloads import dump
from .definitions import RetryPolicy, adapter_for
from .journal import Journal
from .reconcile import Reconciled
from .step_call import Call, run_call
from .tools import Tool

__all__ = ["ConnectorCall", "ConnectorSteps"]


class ConnectorCall(pydantic.BaseModel):
    """How one operation is called beyond its arguments (all optional)."""

    model_config = pydantic.ConfigDict(frozen=True, arbitrary_types_allowed=True)

    idempotency_key: str | None = None
    retry: RetryPolicy | None = None
    timeout: float | str | None = None
    # For an irreversible operation: ``check(arguments, idempotency_key) -> Reconciled``, asked after a
    # crash left only the step's intent whether the remote side did it (see :mod:`.reconcile`).
    reconcile: Callable[[pydantic.BaseModel, str], Any] | None = None


class ConnectorSteps:
    """What ``ctx.connector(name)`` returns: ``await crm.call("get_contact", id="42")``."""

    def __init__(self, journal: Journal, connector: Connector) -> None:
        self._journal = journal
        self._connector = connector
        self._learnt: Mapping[str, OperationSpec] | None = None  # by load(), for this run

    @property
    def name(self) -> str:
        return self._connector.name

    async def load(self) -> ConnectorSteps:
        """Learn the operations of a connector that lists them from its system (an MCP server's tools),
        as a durable read step ``<connector>.list_tools``: a replay uses the recorded list and asks
        nothing. Other connectors know theirs already; for them this does nothing. Returns self."""
        connector = self._connector
        if isinstance(connector, Discovering) and self._learnt is None:

            async def perform() -> Any:
                return await connector.discover()

            found = await run_call(self._journal, Call(perform, (), {}, f"{self.name}.list_tools"))
            self._learnt = connector.adopt(found)
        return self

    def _operations(self) -> Mapping[str, OperationSpec]:
        return self._connector.operations() if self._learnt is None else self._learnt

    def spec(self, operation: OperationSpec | str) -> OperationSpec:
        """The operation named (one the connector offers) or given (e.g. a typed HTTP operation)."""
        if isinstance(operation, OperationSpec):
            return operation
        found = self._operations().get(operation)
        if found is None:
            known = ", ".join(sorted(self._operations())) or "none built in"
            raise InvalidInput(f"connector {self.name!r} has no operation {operation!r} (known: {known})")
        return found

    async def call(
        self,
        operation: OperationSpec | str,
        arguments: pydantic.BaseModel | Mapping[str, Any] | None = None,
        *,
        options: ConnectorCall | None = None,
        **fields: Any,
    ) -> Any:
        """Run ``operation`` once, durably, with ``arguments`` (a model, a mapping or keyword fields)."""
        if isinstance(operation, str):
            await self.load()
        spec = self.spec(operation)
        model = _arguments(self.name, spec, arguments, fields)
        how = options or ConnectorCall()
        key = how.idempotency_key or self._journal.step_key(self._journal.step_count + 1)
        described = Operation(self.name, spec.name, spec.effect, key, model.model_dump(mode="json"))
        connector = self._connector

        async def perform() -> Any:
            return pydantic_core.to_jsonable_python(await connector.invoke(spec, model, key))

        call = Call(
            perform,
            (),
            {},
            described.step_name,
            "step",
            spec.effect,
            how.retry,
            how.timeout,
            key,
            input_json=dump(described.journal_input(), f"the arguments of {described.step_name}"),
            reconcile=_reconcile(how, connector, spec, model),
        )
        return _result(spec, await run_call(self._journal, call))

    def tools(self, *operations: OperationSpec | str) -> list[Tool]:
        """The operations (default: every built-in one) as tools for ``ctx.agent(tools=...)``; an agent's
        call of one is a durable step like any tool's, asked about first when its risk says so."""
        if isinstance(self._connector, Discovering) and self._learnt is None:
            raise InvalidInput(
                f"connector {self.name!r} learns its tools from its server: "
                f"`{self.name} = await ctx.connector({self.name!r}).load()` first, then `{self.name}.tools()`"
            )
        chosen = operations or tuple(self._operations().values())
        return [_as_tool(self._connector, self.spec(op)) for op in chosen]


def _arguments(
    connector: str,
    spec: OperationSpec,
    given: pydantic.BaseModel | Mapping[str, Any] | None,
    fields: dict[str, Any],
) -> pydantic.BaseModel:
    if isinstance(given, spec.arguments) and not fields:
        return given
    data = {**(given.model_dump() if isinstance(given, pydantic.BaseModel) else dict(given or {})), **fields}
    try:
        return spec.arguments.model_validate(data)
    except pydantic.ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'arguments'}: {err['msg']}" for err in e.errors()[:3]
        )
        raise InvalidInput(f"arguments for {connector}.{spec.name} are not valid: {problems}") from None


def _reconcile(
    how: ConnectorCall, connector: Connector, spec: OperationSpec, model: pydantic.BaseModel
) -> Callable[..., Any] | None:
    """The call's own check, else the connector's when it can ask its system of record."""
    if how.reconcile is not None:
        return _check(how.reconcile, model)
    if spec.effect != "irreversible" or not isinstance(connector, Reconciling):
        return None
    asking = connector

    async def ask(arguments: pydantic.BaseModel, idempotency_key: str) -> Reconciled:
        found = await asking.was_done(spec, arguments, idempotency_key)
        if found.happened is None:
            return Reconciled.unknown()
        return Reconciled.done(found.output) if found.happened else Reconciled.not_done()

    return _check(ask, model)


def _check(
    reconcile: Callable[[pydantic.BaseModel, str], Any], model: pydantic.BaseModel
) -> Callable[..., Any]:
    async def check(idempotency_key: str) -> Reconciled:
        answer = reconcile(model, idempotency_key)
        answer = await answer if inspect.isawaitable(answer) else answer
        if isinstance(answer, Reconciled) and answer.status == "done":
            return Reconciled.done(pydantic_core.to_jsonable_python(answer.output))
        return cast(Reconciled, answer)  # checked by the journal, which names the check if it is not one

    return check


def _result(spec: OperationSpec, value: Any) -> Any:
    return value if spec.result is None else adapter_for(spec.result).validate_python(value)


def _as_tool(connector: Connector, spec: OperationSpec) -> Tool:
    async def perform(idempotency_key: str, **fields: Any) -> Any:
        model = spec.arguments.model_validate(fields)
        return pydantic_core.to_jsonable_python(await connector.invoke(spec, model, idempotency_key))

    return Tool(
        fn=perform,
        name=f"{connector.name}_{spec.name}",
        description=spec.description or f"{spec.name} on {connector.name}",
        effect=spec.effect,
        risk=spec.risk,
        arguments=spec.arguments,
    )
