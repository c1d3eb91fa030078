"""``ctx.agent``: a tool-using model loop where every turn and every tool call is its own durable step.

A crash mid-agent replays finished turns and tool calls from their records and carries on from the first
unfinished one. The loop stops with status ``completed`` when the model answers without calling a tool,
``max_steps`` when it used its turns, or ``budget`` when its budget (or the run's) is spent: only
``completed`` is success. When the conversation nears the model's context window (three quarters of the
room :func:`.fit.room` leaves), the oldest turns are replaced by a summary from the cheapest tier, itself a
recorded step (``<name>:compress``), so a replay rebuilds the same conversation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ActionRejected, InvalidInput, StepError
from .fit import room
from .journal import Journal
from .llm import LlmRequest, ModelCalls
from .step_call import use_tool
from .tools import Tool, as_tool

__all__ = ["AgentResult", "AgentTask", "run_agent"]

DEFAULT_INSTRUCTIONS = (
    "You are a careful assistant working for a small business. Use the tools when they help; when you "
    "have what the goal asks for, answer with it and call no tool."
)
COMPRESS_PROMPT = (
    "Below are the earlier turns of an assistant working on a goal with tools. Summarise what was "
    "learned and done so far, keeping every fact, number and name the goal may need."
)
COMPRESS_AT = 0.75  # of the room in the window: past it, the oldest turns are summarised


@dataclass(frozen=True)
class AgentResult:
    status: str  # completed | max_steps | budget
    output: str
    turns: int
    tool_calls: int
    cost: float

    @property
    def ok(self) -> bool:
        return self.status == "completed"


@dataclass(frozen=True)
class AgentTask:
    """What ``ctx.agent`` was asked (see its docstring)."""

    goal: str
    tools: Sequence[Tool | Any] = ()
    model: str | None = None
    max_steps: int = 10
    budget: float | None = None
    instructions: str | None = None
    name: str = "agent"


async def run_agent(models: ModelCalls, task: AgentTask) -> AgentResult:
    from ..models import Tool as ModelTool
    from ..models import assistant, system, tool_result, user
    from ..models.types import ToolCall

    max_steps, budget = task.max_steps, task.budget
    if max_steps < 1:
        raise InvalidInput(f"max_steps must be at least 1, got {max_steps}")
    table = {t.name: t for t in map(as_tool, task.tools)}
    specs = tuple(ModelTool(t.name, t.description, t.json_schema()) for t in table.values())
    messages: list[Any] = [system(task.instructions or DEFAULT_INSTRUCTIONS), user(task.goal)]
    cost, calls, text = 0.0, 0, ""
    for turn in range(1, max_steps + 1):
        if budget is not None and cost >= budget:
            return AgentResult("budget", text, turn - 1, calls, cost)
        messages = await _compress(models, task, messages, specs)
        try:
            record = await models.call(
                f"{task.name}:turn", LlmRequest(task.model, tuple(messages), None, tools=specs)
            )
        except StepError as e:
            if e.error_type == "BudgetExceeded":
                return AgentResult("budget", text, turn - 1, calls, cost)
            raise
        cost += float(record.get("cost") or 0.0)
        text = str(record.get("text") or "")
        wanted = record.get("tool_calls") or []
        if not wanted:
            return AgentResult("completed", text, turn, calls, cost)
        requested = [ToolCall(c["id"], c["name"], dict(c["arguments"])) for c in wanted]
        messages.append(assistant(text, requested))
        for call in requested:
            calls += 1
            messages.append(tool_result(call, await _use(models.journal, table, call.name, call.arguments)))
    return AgentResult("max_steps", text, max_steps, calls, cost)


async def _compress(
    models: ModelCalls, task: AgentTask, messages: list[Any], specs: tuple[Any, ...]
) -> list[Any]:
    """``messages`` with the oldest turns summarised when they near the window, else as they are."""
    from ..models import user
    from ..models.tokens import estimate_messages_tokens

    gateway = models.journal.engine.models
    window = None if gateway is None else gateway.context_window(task.model)
    if gateway is None or window is None:
        return messages
    limit = room(window, gateway.config.max_tokens)
    if estimate_messages_tokens(messages, specs) <= COMPRESS_AT * limit:
        return messages
    head, groups = messages[:2], _turns(messages[2:])
    old: list[Any] = []
    # Keep the latest turn whole; summarise from the oldest until what is left is half the room.
    while len(groups) > 1 and estimate_messages_tokens([*head, *_flat(groups)], specs) > limit / 2:
        old.extend(groups.pop(0))
    if not old:
        return messages
    summary = await models.summarize(f"{task.name}:compress", _transcript(old), COMPRESS_PROMPT)
    return [*head, user(f"Summary of the earlier turns: {summary}"), *_flat(groups)]


def _turns(messages: list[Any]) -> list[list[Any]]:
    """Messages grouped into turns: an assistant message with the tool results that answer it."""
    groups: list[list[Any]] = []
    for m in messages:
        if m.role == "tool" and groups:
            groups[-1].append(m)
        else:
            groups.append([m])
    return groups


def _flat(groups: list[list[Any]]) -> list[Any]:
    return [m for g in groups for m in g]


def _transcript(messages: list[Any]) -> str:
    lines = []
    for m in messages:
        calls = "".join(f" [calls {c.name}({c.arguments})]" for c in m.tool_calls)
        lines.append(f"{m.role}: {m.text}{calls}")
    return "\n".join(lines)


async def _use(journal: Journal, table: dict[str, Tool], name: str, arguments: dict[str, Any]) -> Any:
    """Run one requested tool; a mistake becomes a message the model can correct, not a crash."""
    tool = table.get(name)
    if tool is None:
        return {"error": f"there is no tool named {name!r}; available: {', '.join(sorted(table))}"}
    try:
        return await use_tool(journal, tool, arguments)
    except InvalidInput as e:
        return {"error": str(e)}
    except ActionRejected as e:
        return {"error": f"a reviewer rejected this call{': ' + e.comment if e.comment else ''}"}
    except StepError as e:
        return {"error": f"{e.error_type}: {e.message}"}
