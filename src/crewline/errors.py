"""One error tree for everything crewline raises.

    CrewlineError
    ├── ConfigError                 settings or project configuration is wrong
    │   └── PriceUnknown            a call with no known price was refused (a budget in scope, or strict_prices)
    ├── InvalidInput                caller gave input of the wrong shape (exit code 2 on the CLI)
    ├── StoreError
    │   ├── DatabaseUnavailable     cannot reach the database (retryable)
    │   ├── MigrationError          schema is missing, newer than this code, or a migration failed
    │   └── GuardFailed             a guarded write's precondition did not hold; nothing of it was written
    ├── WorkflowError
    │   ├── UnknownWorkflow         no workflow of that name is registered
    │   ├── WorkflowDisabled        an operator disabled the workflow: it starts no runs until enabled
    │   ├── RunNotFound             no run with that id
    │   ├── ReviewNotFound          no review request with that id
    │   ├── InvalidRunState         the operation does not fit the run's state (e.g. resolve a running run)
    │   │   └── RunExists           a new run was given the id of one that already exists
    │   ├── DeterminismError        replayed code called a different step than the one recorded
    │   ├── StepError               a step failed after its retries; carries the recorded error
    │   ├── WaitTimeout             ``ctx.wait_for`` timed out
    │   ├── RunFailed               awaited run ended failed or cancelled
    │   ├── ActionRejected          a reviewer rejected the action (a tool call, say)
    │   └── Cancelled               the run was cancelled (raised at a step boundary)
    ├── BudgetExceeded              a budget would be exceeded; names the budget, its limit and the spend
    ├── PromotionRefused            a prompt version lacks the passing evaluation its label requires
    ├── ChannelError                an alert notice could not be delivered (names no URL, no password)
    ├── ConnectorError              a call to the operator's system failed; names the connector and what to
    │   │                           check, never a credential; ``retryable`` says if trying again helps
    │   ├── ConnectorAuthError      the system refused the credentials (check the connector's reference)
    │   ├── ConnectorRejected       the system refused the request itself (4xx): asking again will not help
    │   ├── ConnectorUnavailable    connection failed or the system answered 5xx (retryable)
    │   │   ├── ConnectorTimeout    no answer in time (retryable)
    │   │   └── ConnectorRateLimited  429; ``retry_after`` seconds when the system said (retryable)
    │   └── ResponseTooLarge        the answer was larger than the connector's limit
    └── ModelError                  anything from a model provider; ``retryable`` says if trying again helps,
                                    ``tries`` how many attempts the call made
        ├── UnknownModel            name is neither a configured alias, tier nor ``provider/model``
        ├── RateLimited             429; ``retry_after`` seconds when the provider said
        ├── ModelTimeout
        ├── AuthError               missing or rejected credentials; names the variable to set
        ├── BadRequest
        │   ├── ContextTooLong
        │   └── UnsupportedOperation    the model cannot do this at all (e.g. embeddings from a chat model)
        ├── ContentPolicy
        ├── ProviderUnavailable     5xx, connection failures, open circuit breaker, cut-off streams
        └── InvalidOutput           reply failed validation after its re-asks; carries every attempt

Lower-layer errors (sqlite3, psycopg, httpx) are converted where they enter, chained with ``from``.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ActionRejected",
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
    "ContextTooLong",
    "CrewlineError",
    "DatabaseUnavailable",
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
    "RateLimited",
    "ResponseTooLarge",
    "ReviewNotFound",
    "RunExists",
    "RunFailed",
    "RunNotFound",
    "StepError",
    "StoreError",
    "UnknownModel",
    "UnknownWorkflow",
    "UnsupportedOperation",
    "WaitTimeout",
    "WorkflowDisabled",
    "WorkflowError",
]


class CrewlineError(Exception):
    """Base of every error crewline raises on purpose."""


class ConfigError(CrewlineError):
    pass


class PriceUnknown(ConfigError):
    """A model has no known price, so its call cannot be held against a budget; the fix is a price."""


class InvalidInput(CrewlineError):
    pass


class StoreError(CrewlineError):
    pass


class DatabaseUnavailable(StoreError):
    pass


class MigrationError(StoreError):
    pass


class GuardFailed(StoreError):
    """A guarded write's precondition did not hold; nothing of it was written."""


class WorkflowError(CrewlineError):
    pass


class UnknownWorkflow(WorkflowError):
    pass


class WorkflowDisabled(WorkflowError):
    """An operator disabled the workflow (``crewline workflows disable``): no run of it starts."""


class RunNotFound(WorkflowError):
    pass


class ReviewNotFound(WorkflowError):
    pass


class InvalidRunState(WorkflowError):
    pass


class RunExists(InvalidRunState):
    pass


class DeterminismError(WorkflowError):
    pass


class StepError(WorkflowError):
    """A step failed for good. Raised identically on first execution and on replay."""

    def __init__(self, step: int, name: str, error_type: str, message: str) -> None:
        super().__init__(f"step {step} ({name}) failed: {error_type}: {message}")
        self.step = step
        self.name = name
        self.error_type = error_type
        self.message = message


class WaitTimeout(WorkflowError):
    pass


class RunFailed(WorkflowError):
    def __init__(self, run_id: str, status: str, error: dict[str, Any] | None) -> None:
        detail = ""
        if error:
            detail = f": {error.get('type')}: {error.get('message')}"
            if error.get("step") is not None:
                detail += f" (at step {error['step']})"
        super().__init__(f"run {run_id} {status}{detail}")
        self.run_id = run_id
        self.status = status
        self.error = error


class Cancelled(WorkflowError):
    pass


class ActionRejected(WorkflowError):
    def __init__(self, action: str, decided_by: str | None, comment: str | None) -> None:
        why = f": {comment}" if comment else ""
        super().__init__(f"{action} was rejected by {decided_by or 'a reviewer'}{why}")
        self.action = action
        self.decided_by = decided_by
        self.comment = comment


class BudgetExceeded(CrewlineError):
    def __init__(self, budget: str, limit: float, spent: float, requested: float = 0.0) -> None:
        super().__init__(
            f"budget {budget!r} exceeded: limit ${limit:.4f}, spent ${spent:.4f}, this call needs up to ${requested:.4f}"
        )
        self.budget = budget
        self.limit = limit
        self.spent = spent
        self.requested = requested


class ChannelError(CrewlineError):
    """An alert channel refused or could not take a notice; the message is safe to log and store."""


class ConnectorError(CrewlineError):
    """A connector's call failed. The message names the connector and what to check; it never holds a
    credential, so it is safe to log, record as a step's error and show."""

    retryable: bool = False

    def __init__(self, connector: str, message: str, *, status: int | None = None) -> None:
        super().__init__(f"connector {connector!r}: {message}")
        self.connector = connector
        self.status = status


class ConnectorAuthError(ConnectorError):
    pass


class ConnectorRejected(ConnectorError):
    pass


class ConnectorUnavailable(ConnectorError):
    retryable = True


class ConnectorTimeout(ConnectorUnavailable):
    pass


class ConnectorRateLimited(ConnectorUnavailable):
    def __init__(
        self, connector: str, message: str, *, status: int | None = 429, retry_after: float | None = None
    ) -> None:
        super().__init__(connector, message, status=status)
        self.retry_after = retry_after


class ResponseTooLarge(ConnectorError):
    pass


class ModelError(CrewlineError):
    """``tries``: how many attempts the call made before it gave up (set where its route gives up; an
    error raised outside a route counts as one)."""

    retryable: bool = False
    tries: int = 1

    def __init__(self, message: str, *, provider: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.provider = provider
        self.status = status


class UnknownModel(ModelError):
    pass


class RateLimited(ModelError):
    retryable = True

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        status: int | None = 429,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, provider=provider, status=status)
        self.retry_after = retry_after


class ModelTimeout(ModelError):
    retryable = True


class AuthError(ModelError):
    pass


class BadRequest(ModelError):
    pass


class ContextTooLong(BadRequest):
    pass


class UnsupportedOperation(BadRequest):
    """Not a fault of the deployment: asking again, or asking another call, will not change the answer."""


class ContentPolicy(ModelError):
    pass


class ProviderUnavailable(ModelError):
    retryable = True


class InvalidOutput(ModelError):
    def __init__(
        self, message: str, *, attempts: list[Any] | None = None, provider: str | None = None
    ) -> None:
        super().__init__(message, provider=provider)
        self.attempts = attempts or []


class PromotionRefused(CrewlineError):
    """Labelling a prompt version ``production`` was refused: it has no passing evaluation on the current
    version of the dataset its ``[evals.NAME]`` section requires. The message says what to run."""
