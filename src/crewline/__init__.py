"""crewline: the AI operating layer for one-person companies and small teams."""

from .app import App
from .config import Settings
from .errors import (
    BudgetExceeded,
    Cancelled,
    ConfigError,
    CrewlineError,
    DatabaseUnavailable,
    DeterminismError,
    InvalidInput,
    InvalidRunState,
    ModelError,
    RunFailed,
    RunNotFound,
    StepError,
    UnknownWorkflow,
    WaitTimeout,
)
from .flows import Context, Decision, Queue, RetryPolicy, ReviewRequest, RunRecord, StepRecord, Workflow

__all__ = [
    "App",
    "BudgetExceeded",
    "Cancelled",
    "ConfigError",
    "Context",
    "CrewlineError",
    "DatabaseUnavailable",
    "Decision",
    "DeterminismError",
    "InvalidInput",
    "InvalidRunState",
    "ModelError",
    "Queue",
    "RetryPolicy",
    "ReviewRequest",
    "RunFailed",
    "RunNotFound",
    "RunRecord",
    "Settings",
    "StepError",
    "StepRecord",
    "UnknownWorkflow",
    "WaitTimeout",
    "Workflow",
]
