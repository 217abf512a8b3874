"""The JSON bodies the HTTP API takes and answers, as pydantic models for the OpenAPI docs.

A saga is answered in the form ``sagaline status --json`` prints (:meth:`SagaRun.summary
<sagaline.SagaRun.summary>`); :class:`SagaSummary` describes that form for the docs, and a
test pins it to the summary's keys so the two cannot drift apart.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from sagaline.outcome import ErrorInfo, Progress
from sagaline.status import SagaStatus, StepStatus

MAX_REASON = 500
"""The longest cancel reason accepted, in characters."""


class ApiModel(BaseModel):
    """A body of the API: its field docstrings are its fields' descriptions in the docs."""

    model_config = ConfigDict(use_attribute_docstrings=True)


class CompensationSummary(ApiModel):
    """Where a step's compensation stands."""

    status: StepStatus
    """The compensation's status."""
    attempts: int
    """How many attempts were started."""


class StepSummary(ApiModel):
    """One step of a saga, in forward order."""

    name: str
    """The step's name."""
    status: StepStatus
    """Where its action stands."""
    attempts: int
    """How many attempts were started."""
    compensation: CompensationSummary | None
    """Its compensation, when it has one."""
    progress: Progress | None
    """What its latest attempt last reported with ``ctx.progress``, if anything."""
    signal: str | None = None
    """The signal it waits for, while it waits for one (``waiting``)."""
    wait_until: datetime | None = None
    """When that wait times out."""


class SagaSummary(ApiModel):
    """A saga run: what ``sagaline status ID --json`` prints."""

    saga_id: str
    """The run's id (a UUIDv7)."""
    name: str
    """The saga's name."""
    status: SagaStatus
    """Where it stands; ``completed``, ``compensated``, ``compensation_failed``, ``failed``,
    ``cancelled`` and ``needs_attention`` are final."""
    correlation_id: str
    """The business flow it belongs to."""
    causation_id: str | None
    """What caused it to start."""
    parent_id: str | None
    """The parent saga's id, when it is a child saga."""
    inputs: dict[str, Any]
    """The validated inputs."""
    result: Any
    """The saga's result, once completed."""
    error: ErrorInfo | None
    """The error that failed it, if any."""
    failed_step: str | None
    """The step whose failure started the compensation."""
    cancel_requested: bool
    """Whether it was cancelled (or passed its deadline)."""
    waiting_on: str | None
    """The operation it waits on, while it runs."""
    deadline_at: datetime | None
    """When it must be over by, if it has a deadline."""
    recoveries: int
    """How often the recovery sweep drove it on since its last progress."""
    steps: list[StepSummary]
    """Every step, in forward order."""
    compensations: list[str]
    """The compensations that completed, in the order they ran."""
    undone: list[str]
    """Steps whose compensation failed: effects left in place."""
    created_at: datetime
    """When it was recorded."""
    ended_at: datetime | None
    """When it reached its final state."""


class StartedSaga(ApiModel):
    """A saga started (or, for a repeated ``Idempotency-Key``, the one it started first)."""

    saga_id: str
    """The run's id; ``GET /sagas/{saga_id}`` shows it."""
    correlation_id: str
    """The run's correlation id."""
    name: str
    """The saga's name."""


class SagaPage(ApiModel):
    """One page of sagas, newest first."""

    sagas: list[SagaSummary]
    """The sagas of this page."""
    next_cursor: str | None
    """Pass it as ``cursor`` for the next page; ``null`` when there is none."""


class CancelRequest(ApiModel):
    """Why a saga is cancelled."""

    reason: str = Field(default="cancelled by request", min_length=1, max_length=MAX_REASON)
    """Recorded as the saga's error."""


class Cancelled(ApiModel):
    """A cancel accepted: what ``sagaline cancel ID --json`` prints."""

    saga_id: str
    """The saga's id."""
    status: SagaStatus
    """``compensating`` while its completed steps are undone, ``cancelled`` once done."""


class FieldProblem(ApiModel):
    """What is wrong with one field of a request."""

    field: str
    """The field, header or parameter (``items.0.quantity``, ``X-Correlation-ID``)."""
    problem: str
    """What is wrong with it."""


class Problem(ApiModel):
    """An error: what went wrong and what to do, and for invalid input every field's fault."""

    detail: str
    """What went wrong, and what to do about it."""
    errors: list[FieldProblem] = Field(default_factory=list)
    """For invalid input, one entry per field."""


class Health(ApiModel):
    """Whether the process (``/healthz``) or its saga store (``/readyz``) is up."""

    status: str
    """``ok`` or ``ready``; ``unavailable`` when Redis does not answer."""
    detail: str | None = None
    """Why it is not ready."""
