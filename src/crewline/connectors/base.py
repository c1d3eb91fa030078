"""What every connector shares: the effect of an operation, its description, and the connector protocol.

A *connector* is one configured link to an operator's system (``[connectors.crm] type = "http"``). It
offers *operations*, each an :class:`OperationSpec`: a name, an :data:`Effect` (``read`` is safe to repeat,
``idempotent`` repeats harmlessly because the call carries an idempotency key the remote side honours,
``irreversible`` happens once or is asked about), a Pydantic model of its arguments and, optionally, the
type of its result. A workflow never calls a connector directly: ``ctx.connector("crm").call(op, ...)``
(:mod:`crewline.flows.step_connector`) runs each operation as a durable step, recording the
:class:`Operation` (connector, name, effect, idempotency key, arguments) as the step's input, so a replay
returns the recorded result and never repeats an effect.

How a connector type plugs in (``imap``, ``smtp``, ``slack``, ``mcp`` follow ``http``):

1. In its own module (``connectors/<type>.py``) declare a settings model subclassing
   :class:`ConnectorSettings` with ``type: Literal["<type>"]``; credential fields hold *references*
   (``env:NAME`` / ``secret:NAME``, typed :data:`CredentialRef`), never values.
2. Write the connector: a class satisfying :class:`Connector` (``name``, ``operations()``, ``invoke``,
   ``aclose``). It receives a :class:`ConnectorSetup` (its name, its settings, the
   :class:`~crewline.secret_store.Credentials` that resolve its references, the event hub) and resolves
   each credential when it uses it (``await setup.credentials.resolve(ref, where)``), so a rotated secret
   is picked up on the next call. ``invoke`` receives the idempotency key of the step: send it to the
   remote side where the protocol allows (an ``Idempotency-Key`` header, a Message-ID).
3. Raise only :class:`~crewline.errors.ConnectorError` subclasses, naming the connector and what to check
   (``retryable`` decides whether the step tries again); chain the low-level error with ``from e``; never put
   a credential in a message.
4. Export ``CONNECTOR = ConnectorType(settings=..., build=...)`` (optionally ``problems=`` for checks a
   model cannot express) and add one line ``"<type>": "crewline.connectors.<type>:CONNECTOR"`` to
   :data:`crewline.connectors.registry.TYPES`. ``crewline config check`` then validates its sections.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal, Protocol, runtime_checkable

import pydantic

from ..errors import ConfigError
from ..secret_store import check_reference

if TYPE_CHECKING:
    from ..observe.events import Observers
    from ..secret_store import Credentials

__all__ = [
    "EFFECTS",
    "Connector",
    "ConnectorSettings",
    "ConnectorSetup",
    "ConnectorType",
    "CredentialRef",
    "Discovering",
    "Effect",
    "Found",
    "Operation",
    "OperationSpec",
    "Reconciling",
]

Effect = Literal["read", "idempotent", "irreversible"]
EFFECTS: tuple[str, ...] = ("read", "idempotent", "irreversible")


def _reference(value: object) -> str:
    try:
        return check_reference(value, "it")
    except ConfigError as e:
        raise ValueError(str(e)) from None  # Pydantic reports ValueErrors with the field's name


# A credential reference in a connector's settings: "env:NAME" or "secret:NAME", never the value.
CredentialRef = Annotated[str, pydantic.BeforeValidator(_reference)]


class ConnectorSettings(pydantic.BaseModel):
    """The base of every type's settings: unknown keys are errors, the type is a literal per subclass."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    type: str


@dataclass(frozen=True)
class OperationSpec:
    """One operation a connector offers: what a workflow calls and an agent is shown as a tool."""

    name: str
    effect: Effect
    arguments: type[pydantic.BaseModel]
    result: Any = None  # a type Pydantic validates the result into (None: plain JSON)
    description: str = ""
    risk: str | None = None  # None: by effect (irreversible asks a person when an agent calls it)


@dataclass(frozen=True)
class Operation:
    """One call of an operation as the step journal records it: never a credential in ``arguments``."""

    connector: str
    name: str
    effect: Effect
    idempotency_key: str | None
    arguments: Mapping[str, Any] = field(default_factory=dict)

    @property
    def step_name(self) -> str:
        return f"{self.connector}.{self.name}"

    def journal_input(self) -> dict[str, Any]:
        return {
            "connector": self.connector,
            "operation": self.name,
            "effect": self.effect,
            "idempotency_key": self.idempotency_key,
            "arguments": dict(self.arguments),
        }


class Connector(Protocol):
    """A built connector. ``invoke`` performs one operation live (the journal decides whether it runs)."""

    @property
    def name(self) -> str: ...

    def operations(self) -> Mapping[str, OperationSpec]: ...

    async def invoke(
        self, spec: OperationSpec, arguments: pydantic.BaseModel, idempotency_key: str
    ) -> Any: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class Discovering(Protocol):
    """A connector that learns its operations from its system (an MCP server's tools). The step layer
    records what :meth:`discover` returns (JSON) as a durable read step and hands it to :meth:`adopt`,
    so a replay builds the same operations without asking the system again."""

    async def discover(self) -> list[dict[str, Any]]: ...

    def adopt(self, found: Sequence[Mapping[str, Any]]) -> Mapping[str, OperationSpec]: ...


@dataclass(frozen=True)
class Found:
    """What a connector's system of record says of an operation a crash left unknown: ``happened`` is
    True, False, or None when it cannot say; ``output`` is the operation's result when it happened."""

    happened: bool | None
    output: Any = None


@runtime_checkable
class Reconciling(Protocol):
    """A connector that can ask its system of record whether an irreversible operation happened (the SMTP
    connector looks for the Message-ID in Sent). ``ctx.connector`` uses it as the reconcile check of its
    irreversible operations unless the call names its own."""

    async def was_done(
        self, spec: OperationSpec, arguments: pydantic.BaseModel, idempotency_key: str
    ) -> Found: ...


@dataclass(frozen=True)
class ConnectorSetup:
    """What a connector type's factory is given."""

    name: str
    settings: ConnectorSettings
    credentials: Credentials
    observers: Observers | None = None
    # Another configured connector by name (the SMTP connector saves what it sent through an IMAP one).
    sibling: Callable[[str], Connector] | None = None


@dataclass(frozen=True)
class ConnectorType:
    """A connector type: its settings model, its factory, and checks a model cannot express
    (``problems(name, settings, credentials)`` lists what is wrong, e.g. an unset variable)."""

    settings: type[ConnectorSettings]
    build: Callable[[ConnectorSetup], Connector]
    problems: Callable[[str, ConnectorSettings, Credentials], list[str]] | None = None
