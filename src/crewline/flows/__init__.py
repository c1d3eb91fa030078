"""Workflows: definitions, the run context, the durable engine, operator actions on runs."""

from .context import Context
from .definitions import Queue, RetryPolicy, Workflow
from .engine import Engine
from .reconcile import Reconciled
from .review_requests import Decision, ReviewRequest, RiskPolicy
from .run_records import RunRecord
from .step_store import StepRecord
from .tools import Tool, tool

__all__ = [
    "Context",
    "Decision",
    "Engine",
    "Queue",
    "Reconciled",
    "RetryPolicy",
    "ReviewRequest",
    "RiskPolicy",
    "RunRecord",
    "StepRecord",
    "Tool",
    "Workflow",
    "tool",
]
