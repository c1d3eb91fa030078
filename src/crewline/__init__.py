"""crewline: the AI operating layer for one-person companies and small teams.

The names below are loaded when first used, not when ``crewline`` is imported: a command or a client that
needs only the errors does not pay for the engine, the gateway and their dependencies. ``_HOMES`` says
which module defines each name; the ``TYPE_CHECKING`` block says the same to type checkers and IDEs.
"""

from __future__ import annotations

import importlib

# typing.TYPE_CHECKING without importing typing (a third of this module's cost); type checkers take any
# name TYPE_CHECKING as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .app import App
    from .config import Settings
    from .errors import (
        ActionRejected,
        AuthError,
        BadRequest,
        BudgetExceeded,
        Cancelled,
        ChannelError,
        ConfigError,
        ConnectorAuthError,
        ConnectorError,
        ConnectorRateLimited,
        ConnectorRejected,
        ConnectorTimeout,
        ConnectorUnavailable,
        ContentPolicy,
        ContextTooLong,
        CrewlineError,
        DatabaseUnavailable,
        DeterminismError,
        GuardFailed,
        InvalidInput,
        InvalidOutput,
        InvalidRunState,
        MigrationError,
        ModelError,
        ModelTimeout,
        PriceUnknown,
        PromotionRefused,
        ProviderUnavailable,
        RateLimited,
        ResponseTooLarge,
        ReviewNotFound,
        RunExists,
        RunFailed,
        RunNotFound,
        StepError,
        StoreError,
        UnknownModel,
        UnknownWorkflow,
        UnsupportedOperation,
        WaitTimeout,
        WorkflowDisabled,
        WorkflowError,
    )
    from .flows import (
        Context,
        Decision,
        Queue,
        Reconciled,
        RetryPolicy,
        ReviewRequest,
        RunRecord,
        StepRecord,
        Tool,
        Workflow,
        tool,
    )

__all__ = [
    "ActionRejected",
    "App",
    "AuthError",
    "BadRequest",
    "BudgetExceeded",
    "Cancelled",
    "ChannelError",
    "ConfigError",
    "ConnectorAuthError",
    "ConnectorError",
    "ConnectorRateLimited",
    "ConnectorRejected",
    "ConnectorTimeout",
    "ConnectorUnavailable",
    "ContentPolicy",
    "Context",
    "ContextTooLong",
    "CrewlineError",
    "DatabaseUnavailable",
    "Decision",
    "DeterminismError",
    "GuardFailed",
    "InvalidInput",
    "InvalidOutput",
    "InvalidRunState",
    "MigrationError",
    "ModelError",
    "ModelTimeout",
    "PriceUnknown",
    "PromotionRefused",
    "ProviderUnavailable",
    "Queue",
    "RateLimited",
    "Reconciled",
    "ResponseTooLarge",
    "RetryPolicy",
    "ReviewNotFound",
    "ReviewRequest",
    "RunExists",
    "RunFailed",
    "RunNotFound",
    "RunRecord",
    "Settings",
    "StepError",
    "StepRecord",
    "StoreError",
    "Tool",
    "UnknownModel",
    "UnknownWorkflow",
    "UnsupportedOperation",
    "WaitTimeout",
    "Workflow",
    "WorkflowDisabled",
    "WorkflowError",
    "tool",
]

_HOMES: dict[str, str] = {
    "App": "app",
    "Settings": "config",
    "ActionRejected": "errors",
    "AuthError": "errors",
    "BadRequest": "errors",
    "BudgetExceeded": "errors",
    "Cancelled": "errors",
    "ChannelError": "errors",
    "ConfigError": "errors",
    "ConnectorAuthError": "errors",
    "ConnectorError": "errors",
    "ConnectorRateLimited": "errors",
    "ConnectorRejected": "errors",
    "ConnectorTimeout": "errors",
    "ConnectorUnavailable": "errors",
    "ContentPolicy": "errors",
    "ContextTooLong": "errors",
    "CrewlineError": "errors",
    "DatabaseUnavailable": "errors",
    "DeterminismError": "errors",
    "GuardFailed": "errors",
    "InvalidInput": "errors",
    "InvalidOutput": "errors",
    "InvalidRunState": "errors",
    "MigrationError": "errors",
    "ModelError": "errors",
    "ModelTimeout": "errors",
    "PriceUnknown": "errors",
    "PromotionRefused": "errors",
    "ProviderUnavailable": "errors",
    "RateLimited": "errors",
    "ResponseTooLarge": "errors",
    "ReviewNotFound": "errors",
    "RunExists": "errors",
    "RunFailed": "errors",
    "RunNotFound": "errors",
    "StepError": "errors",
    "StoreError": "errors",
    "UnknownModel": "errors",
    "UnknownWorkflow": "errors",
    "UnsupportedOperation": "errors",
    "WaitTimeout": "errors",
    "WorkflowDisabled": "errors",
    "WorkflowError": "errors",
    "Context": "flows",
    "Decision": "flows",
    "Queue": "flows",
    "Reconciled": "flows",
    "RetryPolicy": "flows",
    "ReviewRequest": "flows",
    "RunRecord": "flows",
    "StepRecord": "flows",
    "Tool": "flows",
    "Workflow": "flows",
    "tool": "flows",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        return _submodule(name)
    value = getattr(importlib.import_module(f".{home}", __name__), name)
    globals()[name] = value  # later lookups are plain attribute reads
    return value


def _submodule(name: str) -> Any:
    """``crewline.store`` and the like after a bare ``import crewline``, as when this module imported them."""
    try:
        return importlib.import_module(f".{name}", __name__)
    except ModuleNotFoundError as e:
        if e.name != f"{__name__}.{name}":
            raise
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
