"""Tools: typed Python functions with an effect class, callable from workflows and by agents.

A tool's argument schema comes from its signature (or the Pydantic model it takes), so arguments from a
model or a reviewer's edit are validated before anything runs, and the same schema is what an agent's model
is shown.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, overload

import pydantic

from ..errors import ConfigError, InvalidInput
from .definitions import EFFECTS

__all__ = ["Tool", "as_tool", "tool"]


@dataclass(frozen=True)
class Tool:
    fn: Callable[..., Any]
    name: str
    description: str
    effect: str
    risk: str | None
    arguments: type[pydantic.BaseModel]
    compensate: Callable[..., Any] | None = None  # undoes a finished call, given its result
    shadow: Any = None  # what an irreversible call returns in a shadow run, where it is not made

    @property
    def default_risk(self) -> str:
        """Reading needs nobody's approval; an irreversible call is asked about unless policy says otherwise."""
        return self.risk or ("medium" if self.effect == "irreversible" else "low")

    def json_schema(self) -> dict[str, Any]:
        return self.arguments.model_json_schema()

    def validate(self, arguments: Any) -> dict[str, Any]:
        """Validated keyword arguments, or :class:`InvalidInput` naming the tool and the field."""
        if not isinstance(arguments, dict):
            raise InvalidInput(
                f"tool {self.name} takes a JSON object of arguments, got {type(arguments).__name__}"
            )
        try:
            model = self.arguments.model_validate(arguments)
        except pydantic.ValidationError as e:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'arguments'}: {err['msg']}"
                for err in e.errors()[:3]
            )
            raise InvalidInput(f"arguments for tool {self.name} are not valid: {problems}") from e
        # A model that allows extra fields (an MCP tool's arguments, checked by its server) keeps them.
        return {
            **(model.model_extra or {}),
            **{name: getattr(model, name) for name in type(model).model_fields},
        }


@overload
def tool(fn: Callable[..., Any], /) -> Tool: ...
@overload
def tool(
    *,
    name: str | None = None,
    effect: str = "read",
    risk: str | None = None,
    description: str | None = None,
    compensate: Callable[..., Any] | None = None,
    shadow: Any = None,
) -> Callable[[Callable[..., Any]], Tool]: ...
def tool(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    effect: str = "read",
    risk: str | None = None,
    description: str | None = None,
    compensate: Callable[..., Any] | None = None,
    shadow: Any = None,
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Declare a tool: ``@tool`` or ``@tool(effect="irreversible", risk="high", compensate=undo)``.

    ``compensate`` is called with the tool's result when a run is undone (see ``Context.step``).
    ``shadow`` is what an irreversible tool returns in a shadow run, which records the call instead.
    """

    def make(f: Callable[..., Any]) -> Tool:
        if effect not in EFFECTS:
            raise ConfigError(
                f"tool {f.__name__}: effect must be one of {', '.join(EFFECTS)}, got {effect!r}"
            )
        return Tool(
            fn=f,
            name=name or f.__name__,
            description=description or inspect.getdoc(f) or f.__name__,
            effect=effect,
            risk=risk,
            arguments=_arguments_model(f, name or f.__name__),
            compensate=compensate,
            shadow=shadow,
        )

    return make(fn) if fn is not None else make


def as_tool(obj: Tool | Callable[..., Any]) -> Tool:
    return obj if isinstance(obj, Tool) else tool(obj)


def _arguments_model(fn: Callable[..., Any], name: str) -> type[pydantic.BaseModel]:
    try:
        hints = inspect.get_annotations(fn, eval_str=True)
    except Exception as e:
        raise ConfigError(
            f"tool {name}: cannot resolve its annotations ({e}); define its types at module level"
        ) from e
    fields: dict[str, Any] = {}
    for param in inspect.signature(fn).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD) or param.name == "idempotency_key":
            continue
        annotation = hints.get(param.name, Any)
        default = ... if param.default is param.empty else param.default
        fields[param.name] = (annotation, default)
    model: type[pydantic.BaseModel] = pydantic.create_model(f"{name}_arguments", **fields)
    return model
