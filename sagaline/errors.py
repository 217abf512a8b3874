"""The exceptions Sagaline raises: one root, a few areas, leaves that say what happened."""

from __future__ import annotations

from typing import Any

from sagaline import codec


class SagaError(Exception):
    """Raised for every error of Sagaline's own; catch this to catch them all."""


class DefinitionError(SagaError):
    """Raised when a saga or step is declared wrongly; the message says how to fix it."""


class ConfigurationError(SagaError):
    """Raised when the engine is wired to something unsafe or inconsistent."""


class InvalidInputError(SagaError):
    """Raised when a saga's inputs fail validation; nothing was recorded or enqueued.

    Attributes:
        saga: The saga's name.
        errors: One entry per problem: ``{"field": "items.0.quantity", "problem": "..."}``.
    """

    def __init__(self, saga: str, errors: list[dict[str, str]]) -> None:
        self.saga = saga
        self.errors = errors
        lines = "; ".join(f"{e['field']}: {e['problem']}" for e in errors)
        super().__init__(f"invalid input for saga {saga!r}: {lines}")


class InvalidSignalError(InvalidInputError):
    """Raised when a signal's name or payload is not valid; nothing was kept or sent."""

    def __init__(self, saga_id: str, name: str, errors: list[dict[str, str]]) -> None:
        super().__init__(f"signal {name!r}", errors)
        lines = "; ".join(f"{e['field']}: {e['problem']}" for e in errors)
        self.args = (f"invalid signal {name!r} for saga {saga_id}: {lines}",)


class InvalidCorrelationIdError(SagaError):
    """Raised when a given correlation id is not a UUID; nothing was recorded or enqueued."""


class UnknownSagaError(SagaError):
    """Raised when no saga of the given name is registered with the engine."""


class SagasDisabledError(SagaError):
    """Raised when a saga is started while sagas are switched off; nothing was enqueued.

    Switch them on with ``SAGALINE_SAGAS_ENABLED=true`` (or the engine's ``enabled``).
    """


class EventError(SagaError):
    """Raised for events: a malformed or unregistered event, or a bus that refused it."""


class InvalidEventError(EventError):
    """Raised when an event's name breaks the convention or is not in the taxonomy."""


class PublishError(EventError):
    """Raised when an event published outside a saga could not be written to the bus."""


class TaxonomyError(EventError):
    """Raised when the taxonomy file cannot be read or declares an event wrongly."""


class StateError(SagaError):
    """Raised when the saga store cannot do what was asked."""


class SagaNotFoundError(StateError):
    """Raised when no saga with the given id is recorded (never was, or expired)."""


class IdempotencyConflictError(SagaError):
    """Raised when an idempotency key already started another saga, or other inputs.

    Nothing was started: use a new key for a new request.
    """


class EnqueueError(StateError):
    """Raised when a saga was recorded but its first message could not be enqueued.

    The saga is recorded as ``failed`` with this error, so it is not lost.
    """


class WaitTimeoutError(SagaError):
    """Raised when a saga did not reach a final state within the time waited."""


class StepError(SagaError):
    """Raised for a failure inside a step; carries the saga id and step name."""

    def __init__(self, message: str, *, saga_id: str = "", step: str = "",
                 details: dict[str, Any] | None = None) -> None:
        self.saga_id = saga_id
        self.step = step
        self.details = details or {}
        super().__init__(message)


class StepTimeoutError(StepError):
    """Raised when a step's action ran past its time limit."""


class SagaCancelledError(StepError):
    """Raised inside an action that stops because its saga was cancelled."""

    non_retryable = True


class DeadlineExceededError(StepError):
    """Raised (and recorded) when a saga runs past its deadline."""

    non_retryable = True


class RecoveryExhaustedError(StepError):
    """Recorded when the recovery sweep gave up driving an operation on."""

    non_retryable = True


class ResultError(StepError):
    """Raised when a step's function returned but its result cannot be used.

    Its result is not JSON, lacks what the saga's ``returns`` reads, or names steps that
    cannot be added. The function ran to its end, so the step is recorded completed, and
    the saga is rolled back with this step undone too.
    """

    non_retryable = True


class AttemptsLostError(StepError):
    """Recorded when every attempt a step's retry policy allows was lost with its process.

    The process running it died mid-step each time (a segfault, the OOM killer), so the
    step fails for good rather than being attempted without end.
    """

    non_retryable = True


class SignalTimeoutError(StepError):
    """Raised when an action waited for a signal past its timeout.

    ``details`` names the signal, the deadline and how many signals of the name came.
    """

    non_retryable = True


class InjectedFaultError(StepError):
    """Raised in place of running an operation that a test or drill told to fail."""


class NonRetryableError(SagaError):
    """Raised by an action to fail its step at once, whatever the retry policy says.

    Subclass it for business failures that another attempt cannot fix (out of stock,
    insufficient funds). ``details`` is recorded with the error.
    """

    non_retryable = True

    def __init__(self, message: str, **details: Any) -> None:
        self.details = details
        super().__init__(message)


def describe_error(error: BaseException, *, step: str | None, attempt: int | None = None,
                   retryable: bool | None = None) -> dict[str, Any]:
    """An error in the form the store records: type, message, step, attempt, details.

    Every recorded error is built here, so its ``type`` is always the class's dotted path.
    It never raises: details that JSON cannot encode are recorded as their ``repr``, so a
    step's own error is never replaced by an encoding error.
    """
    details = getattr(error, "details", None)
    try:
        message = str(error) or type(error).__name__
    except Exception:  # a broken __str__ must not hide the error itself
        message = type(error).__name__
    return {
        "type": f"{type(error).__module__}.{type(error).__qualname__}",
        "message": message,
        "step": step,
        "attempt": attempt,
        "retryable": retryable,
        "details": codec.jsonable_or_repr(details) if isinstance(details, dict) else {},
    }
