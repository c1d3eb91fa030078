"""The top-level public surface and the error tree, pinned: changing either is a decision."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import crewline
import crewline.errors

PUBLIC = [
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


def test_top_level_surface() -> None:
    assert crewline.__all__ == PUBLIC == sorted(PUBLIC)
    assert all(hasattr(crewline, name) for name in PUBLIC)


def _public_errors() -> set[type[BaseException]]:
    """Every public CrewlineError subclass defined anywhere in the package."""
    found: set[type[BaseException]] = set()
    for info in pkgutil.walk_packages(crewline.__path__, "crewline."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if (
                inspect.isclass(obj)
                and issubclass(obj, crewline.errors.CrewlineError)
                and not name.startswith("_")
                and obj.__module__ == info.name
            ):
                found.add(obj)
    return found


def _drawn() -> dict[str, str | None]:
    """The tree in errors.py's docstring: each drawn class name and the name drawn as its parent."""
    drawn: dict[str, str | None] = {}
    stack: list[tuple[int, str]] = []
    for line in (crewline.errors.__doc__ or "").splitlines():
        plain = line.replace("│", " ").replace("├──", "   ").replace("└──", "   ")
        words = plain.split()
        if not words or not (words[0] == "CrewlineError" or "──" in line):
            continue
        indent = len(plain) - len(plain.lstrip())
        while stack and stack[-1][0] >= indent:
            stack.pop()
        drawn[words[0]] = stack[-1][1] if stack else None
        stack.append((indent, words[0]))
    return drawn


def test_every_error_lives_in_the_tree_and_is_exported() -> None:
    errors = _public_errors()
    drawn = _drawn()
    assert {cls.__name__ for cls in errors} == set(drawn)
    for cls in errors:
        assert cls.__module__ == "crewline.errors", f"{cls.__name__} is defined outside errors.py"
        assert cls.__name__ in crewline.errors.__all__
        assert cls.__name__ in crewline.__all__, f"crewline.{cls.__name__} is not exported"
        parent = drawn[cls.__name__]
        if parent is not None:
            assert cls.__bases__[0].__name__ == parent, f"{cls.__name__} is drawn under {parent}"
