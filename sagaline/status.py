"""The states a saga and its steps move through."""

from __future__ import annotations

from enum import Enum


class SagaStatus(str, Enum):
    """Where a saga run stands."""

    #: Forward steps are running.
    RUNNING = "running"
    #: A step failed for good; completed steps are being undone in reverse.
    COMPENSATING = "compensating"
    #: Every step completed; the saga's result is recorded.
    COMPLETED = "completed"
    #: A step failed and every completed step with a compensation was undone.
    COMPENSATED = "compensated"
    #: A step failed and at least one compensation failed after its retries.
    COMPENSATION_FAILED = "compensation_failed"
    #: The saga could not run at all (its first message could not be enqueued).
    FAILED = "failed"
    #: It was cancelled, and every completed step with a compensation was undone.
    CANCELLED = "cancelled"
    #: A step after a completed pivot gave up: the saga cannot be rolled back past its
    #: pivot, so it stays as it is, for an operator (``sagaline stuck`` lists it).
    NEEDS_ATTENTION = "needs_attention"

    @property
    def is_final(self) -> bool:
        """Whether the saga will not change any more."""
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset(
    {
        SagaStatus.COMPLETED,
        SagaStatus.COMPENSATED,
        SagaStatus.COMPENSATION_FAILED,
        SagaStatus.FAILED,
        SagaStatus.CANCELLED,
        SagaStatus.NEEDS_ATTENTION,
    }
)


class StepStatus(str, Enum):
    """Where one step's action (or compensation) stands."""

    #: Not started yet.
    PENDING = "pending"
    #: Its message was sent (a group's branch, a fallback, a compensation); not started yet.
    QUEUED = "queued"
    #: An attempt is running (and holds the lease).
    RUNNING = "running"
    #: An attempt failed; another is scheduled by the retry policy.
    RETRYING = "retrying"
    #: It succeeded; its result is recorded.
    COMPLETED = "completed"
    #: It failed for good.
    FAILED = "failed"
    #: Not run because there was nothing to undo (its action never completed).
    SKIPPED = "skipped"
    #: A compensation waiting for its action, in flight when the saga was stopped, to end.
    AWAITING = "awaiting"
    #: A step that runs a child saga waits for it to end (no worker is held meanwhile).
    WAITING = "waiting"


class Role(str, Enum):
    """Which of a step's operations a task message runs."""

    #: The step's forward action.
    ACTION = "action"
    #: The step's compensation, undoing a completed action (or fallback).
    COMPENSATION = "compensation"
    #: The step's fallback, tried when its action gave up.
    FALLBACK = "fallback"
