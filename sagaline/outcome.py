"""What a saga run looks like from outside: the recorded outcome, in a stable JSON form."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from sagaline import codec
from sagaline.status import SagaStatus, StepStatus


class ErrorInfo(BaseModel):
    """An error as recorded: its type, message and where it happened."""

    type: str
    """The exception's qualified class name."""
    message: str
    """What it said."""
    step: str | None = None
    """The step it happened in."""
    attempt: int | None = None
    """The attempt it ended."""
    retryable: bool | None = None
    """Whether the retry policy would retry it."""
    details: dict[str, Any] = Field(default_factory=dict)
    """Structured details the error carried."""


class Progress(BaseModel):
    """How far a running operation says it is (``ctx.progress``)."""

    done: float
    """Units of work done (epochs, rows, files)."""
    total: float | None = None
    """Units in all, when known."""
    metrics: dict[str, Any] = Field(default_factory=dict)
    """Whatever else it reported (an epoch's accuracy, a loss)."""
    attempt: int
    """The attempt that reported it."""
    at: datetime
    """When it was reported."""

    @property
    def fraction(self) -> float | None:
        """``done / total`` between 0 and 1, when the total is known."""
        if not self.total:
            return None
        return max(0.0, min(1.0, self.done / self.total))

    def describe(self, *, share: bool = True) -> str:
        """The report in words: ``3/10 (30%) val_accuracy=0.91`` (the share optional)."""
        done = f"{self.done:g}" + (f"/{self.total:g}" if self.total else "")
        if share and self.fraction is not None:
            done += f" ({self.fraction:.0%})"
        metrics = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in sorted(self.metrics.items()))
        return f"{done} {metrics}".rstrip()


class OperationRun(BaseModel):
    """One step's action, or its compensation, as recorded."""

    task: str | None = None
    """The Celery task name that runs it."""
    status: StepStatus = StepStatus.PENDING
    """Where it stands."""
    attempts: int = 0
    """How many attempts were started."""
    attempt_times: list[datetime] = Field(default_factory=list)
    """When each attempt started."""
    started_at: datetime | None = None
    """When the first attempt started."""
    ended_at: datetime | None = None
    """When it completed or failed for good."""
    result: Any = None
    """What it returned, when it completed."""
    error: ErrorInfo | None = None
    """The last error, when an attempt failed."""
    child: str | None = None
    """The id of the child saga it runs (or undoes), for a step that runs one."""
    progress: Progress | None = None
    """What its latest attempt last reported with ``ctx.progress`` (``None``: nothing)."""
    signal: str | None = None
    """The signal it waits for, while it waits for one (status ``waiting``)."""
    wait_until: datetime | None = None
    """When its wait for a signal times out (set by its first wait)."""


class SignalReceipt(BaseModel):
    """What became of a signal sent to a saga: the answer to ``engine.signal``."""

    saga_id: str
    """The saga it was sent to."""
    signal: str
    """The signal's name."""
    outcome: Literal["delivered", "kept", "duplicate"]
    """``delivered``: it woke a step that waited for it; ``kept``: it is kept for a step
    that reads it later (none waited); ``duplicate``: this payload came before."""
    received: int = 0
    """How many distinct signals of this name the saga has kept (0 for a duplicate)."""
    woken: list[str] = Field(default_factory=list)
    """The steps it woke."""


class StepRun(OperationRun):
    """A step of a saga run: its action's record and its compensation's."""

    name: str
    """The step's name."""
    compensation: OperationRun | None = None
    """The compensation's record, when the step has a compensation."""
    fallback: OperationRun | None = None
    """The fallback's record, when the step's action gave up and its fallback was due."""


class Transition(BaseModel):
    """One entry of a saga's transition log."""

    at: datetime
    """When it happened (the Redis server's clock)."""
    event: str
    """What happened: ``saga.started``, ``action.completed``, ``compensation.failed``..."""
    step: str | None = None
    """The step concerned, if any."""
    attempt: int | None = None
    """The attempt concerned, if any."""
    detail: dict[str, Any] = Field(default_factory=dict)
    """Anything else recorded with it (an error, a retry delay)."""


class DeadLetter(BaseModel):
    """A compensation that gave up: an effect left in place, for an operator to see."""

    saga_id: str
    """The saga run."""
    saga: str
    """The saga's name."""
    step: str
    """The step whose compensation failed."""
    error: ErrorInfo
    """Its last error."""
    attempts: int
    """How many attempts it made."""
    at: datetime
    """When it gave up."""


class SagaRun(BaseModel):
    """A saga run as recorded in Redis: the answer to ``get(saga_id)``."""

    saga_id: str
    """The run's id (a UUIDv7)."""
    name: str
    """The saga's name."""
    status: SagaStatus
    """Where it stands."""
    correlation_id: str
    """The business flow it belongs to."""
    causation_id: str | None = None
    """What caused it to start, when the starter said."""
    parent_id: str | None = None
    """The parent saga's id, when this run is a child saga of one of its steps."""
    inputs: dict[str, Any] = Field(default_factory=dict)
    """The validated inputs."""
    result: Any = None
    """The saga's result, once completed."""
    error: ErrorInfo | None = None
    """The error that failed it, if any."""
    failed_step: str | None = None
    """The step whose failure started the compensation."""
    cancel_requested: bool = False
    """Whether it was cancelled (or passed its deadline): no new step starts."""
    waiting_on: str | None = None
    """The operation it waits on (``action:reserve_inventory``), while it runs."""
    deadline_at: datetime | None = None
    """When it must be over by, if it has a deadline."""
    recoveries: int = 0
    """How often the recovery sweep drove it on since its last progress."""
    steps: list[StepRun] = Field(default_factory=list)
    """Every step, in forward order."""
    compensations: list[str] = Field(default_factory=list)
    """The compensations that completed, by their own names, in the order they ran."""
    undone: list[str] = Field(default_factory=list)
    """Steps whose compensation failed: effects left in place (``compensation_failed``)."""
    created_at: datetime
    """When it was recorded."""
    ended_at: datetime | None = None
    """When it reached its final state."""
    log: list[Transition] = Field(default_factory=list)
    """Every transition, in order."""

    @property
    def is_final(self) -> bool:
        """Whether the run will not change any more."""
        return self.status.is_final

    def step(self, name: str) -> StepRun:
        """The record of step ``name``."""
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(name)

    def summary(self) -> dict[str, Any]:
        """The JSON form the CLI prints, without the log and attempt details."""
        data: dict[str, Any] = self.model_dump(mode="json", exclude={"log"})
        data["steps"] = [
            {
                "name": s.name,
                "status": s.status.value,
                "attempts": s.attempts,
                "compensation": (
                    None
                    if s.compensation is None
                    else {"status": s.compensation.status.value,
                          "attempts": s.compensation.attempts}
                ),
                "progress": (None if s.progress is None
                             else s.progress.model_dump(mode="json")),
                "signal": s.signal if s.status is StepStatus.WAITING else None,
                "wait_until": (codec.jsonable(s.wait_until)
                               if s.status is StepStatus.WAITING else None),
            }
            for s in self.steps
        ]
        return data


TaskNames = dict[str, tuple[str, str | None]]
"""Per step name, the action's and the compensation's task names; under
``"{step}:fallback"``, those of the step's fallback and its compensation."""


def build_run(saga_id: str, saga: dict[str, str], fields: dict[str, str], log: list[str],
              names: TaskNames) -> SagaRun:
    """Assemble a run from its saga hash, step hash and log, as read from the store."""
    steps = []
    for name in codec.loads(saga.get("plan")) or []:
        action_task, undo_task = names.get(name, (None, None))
        action = operation(fields, f"action:{name}:", action_task)
        undo = None
        if f"compensation:{name}:status" in fields or undo_task is not None:
            undo = operation(fields, f"compensation:{name}:", undo_task)
        fallback = None
        if f"fallback:{name}:status" in fields:
            fallback = operation(fields, f"fallback:{name}:",
                                 names.get(f"{name}:fallback", (None, None))[0])
        steps.append(StepRun(name=name, compensation=undo, fallback=fallback,
                             **action.model_dump()))
    transitions = [transition(raw) for raw in log]
    compensations = [
        (names.get(_undone_by(t), (None, None))[1] or str(t.step)).rsplit(".", 1)[-1]
        for t in transitions if t.event == "compensation.completed" and t.step
    ]
    undone = [s.name for s in steps if s.compensation and s.compensation.status == "failed"]
    return SagaRun(
        saga_id=saga_id,
        name=saga["name"],
        status=SagaStatus(saga["status"]),
        correlation_id=saga.get("correlation_id", ""),
        causation_id=saga.get("causation_id") or None,
        parent_id=saga.get("parent_id") or None,
        inputs=codec.loads(saga.get("inputs")) or {},
        result=codec.loads(saga.get("result")),
        error=codec.loads(saga.get("error")) or None,
        failed_step=saga.get("failed_step") or None,
        cancel_requested=saga.get("cancel_requested") == "1",
        waiting_on=saga.get("waiting_on") or None,
        deadline_at=timestamp(saga.get("deadline_at")),
        recoveries=int(saga.get("recoveries") or 0),
        steps=steps,
        compensations=compensations,
        undone=undone,
        created_at=timestamp(saga["created_at"]),
        ended_at=timestamp(saga.get("ended_at")),
        log=transitions,
    )


def _undone_by(entry: Transition) -> str:
    """The task-names key of what a compensation undid: the step, or its fallback."""
    if entry.detail.get("via") == "fallback":
        return f"{entry.step}:fallback"
    return str(entry.step)


def timestamp(raw: str | float | None) -> datetime | None:
    """A stored epoch-seconds value as an aware UTC datetime."""
    if raw is None or raw == "":
        return None
    return datetime.fromtimestamp(float(raw), tz=UTC)


def operation(fields: dict[str, str], prefix: str, task: str | None) -> OperationRun:
    """Build an operation's record from the step hash fields under ``prefix``."""

    def get(name: str) -> str | None:
        return fields.get(prefix + name)

    error = codec.loads(get("error"))
    return OperationRun(
        task=task,
        status=StepStatus(get("status") or StepStatus.PENDING.value),
        attempts=int(get("attempts") or 0),
        attempt_times=[t for t in (timestamp(x) for x in (get("attempt_times") or "").split(","))
                       if t is not None],
        started_at=timestamp(get("started_at")),
        ended_at=timestamp(get("ended_at")),
        result=codec.loads(get("result")),
        error=ErrorInfo(**error) if error else None,
        child=get("child") or None,
        progress=_progress(get("progress")),
        signal=get("signal") or None,
        wait_until=timestamp(get("signal_deadline")),
    )


def _progress(raw: str | None) -> Progress | None:
    data = codec.loads(raw)
    if not isinstance(data, dict):
        return None
    try:
        return Progress(done=data["done"], total=data.get("total"),
                        metrics=data.get("metrics") or {}, attempt=data["attempt"],
                        at=datetime.fromtimestamp(float(data["at"]), tz=UTC))
    except (KeyError, TypeError, ValueError):
        return None


def transition(raw: str) -> Transition:
    """Build a log entry from its stored JSON."""
    data = codec.loads(raw)
    at = data.pop("at")
    return Transition(
        at=datetime.fromtimestamp(float(at), tz=UTC),
        event=data.pop("event"),
        step=data.pop("step", None),
        attempt=data.pop("attempt", None),
        detail=data,
    )
