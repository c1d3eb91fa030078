"""Workflows: definitions, the run context, the durable engine, operator actions on runs."""

from .context import Context
from .definitions import Queue, RetryPolicy, Workflow
from .engine import Engine
from .records import RunRecord, StepRecord

__all__ = ["Context", "Engine", "Queue", "RetryPolicy", "RunRecord", "StepRecord", "Workflow"]
