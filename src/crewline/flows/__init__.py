"""Workflows: definitions, the run context, the durable engine, operator actions on runs."""

from .context import Context
from .definitions import Queue, RetryPolicy, Workflow
from .engine import Engine
from .records import RunRecord, StepRecord
from .review import Decision, ReviewRequest, RiskPolicy
from .tools import Tool, tool

__all__ = [
    "Context",
    "Decision",
    "Engine",
    "Queue",
    "RetryPolicy",
    "ReviewRequest",
    "RiskPolicy",
    "RunRecord",
    "StepRecord",
    "Tool",
    "Workflow",
    "tool",
]
