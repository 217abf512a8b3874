"""What a saga run did, read from its transition log: attempts in order, and assertions.

Part of :mod:`sagaline.testing`, which exports these names.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass

from sagaline.outcome import SagaRun, Transition
from sagaline.saga import Saga
from sagaline.status import Role, SagaStatus, StepStatus

_ENDS = {"completed": StepStatus.COMPLETED, "retrying": StepStatus.RETRYING,
         "failed": StepStatus.FAILED}


@dataclass(frozen=True)
class Attempt:
    """One attempt of a step's action or compensation, as the transition log tells it."""

    step: str
    """The step's name."""
    role: Role
    """Whether the step's action or its compensation ran."""
    number: int
    """Which attempt of that operation it was, from 1."""
    outcome: StepStatus
    """``completed``, ``retrying`` (failed, and tried again), ``failed`` (for good), or
    ``running`` (not ended when the log was read)."""
    error: str | None = None
    """What the failed attempt raised, as ``Type: message``."""

    @property
    def operation(self) -> str:
        """``action:<step>`` or ``compensation:<step>``, as ``SagaRun.waiting_on`` spells it."""
        return f"{self.role.value}:{self.step}"

    def __str__(self) -> str:
        """One line: operation, attempt, outcome and error."""
        text = f"{self.operation} attempt {self.number} {self.outcome.value}"
        return f"{text} ({self.error})" if self.error else text


def attempts_in(log: Sequence[Transition]) -> list[Attempt]:
    """The attempts a transition log records, in the order they started.

    An attempt ends with ``completed``, ``retrying`` or ``failed``. An end that names no
    attempt (the recovery sweep failing an operation whose worker was lost) ends the last
    attempt of that operation still open; with none open, it counts as an attempt of its own.
    """
    attempts: list[Attempt] = []
    open_at: dict[tuple[str, str, int], int] = {}
    for entry in log:
        role, _, what = entry.event.partition(".")
        if role not in ("action", "compensation") or entry.step is None:
            continue
        key = (role, entry.step, entry.attempt or 0)
        if what == "started":
            open_at[key] = len(attempts)
            attempts.append(Attempt(entry.step, Role(role), entry.attempt or 0,
                                    StepStatus.RUNNING))
        elif what in _ENDS:
            if not entry.attempt:
                key = max((k for k in open_at if k[:2] == key[:2]), default=key,
                          key=lambda k: open_at[k])
            index = open_at.pop(key, None)
            ended = Attempt(entry.step, Role(role), key[2], _ENDS[what], _error_of(entry))
            if index is None:
                attempts.append(ended)
            else:
                attempts[index] = ended
    return attempts


def _error_of(entry: Transition) -> str | None:
    error = entry.detail.get("error")
    if not isinstance(error, dict):
        return None
    kind = str(error.get("type", "")).rsplit(".", 1)[-1]
    return f"{kind}: {error.get('message', '')}" if kind else str(error.get("message", ""))


@dataclass(frozen=True, repr=False)
class RunReport:
    """What happened in one saga run: its record, and every attempt in the order it ran.

    The ``assert_*`` methods raise :class:`AssertionError` with the whole story (status,
    error, each attempt), so a failing test says what ran instead.
    """

    def __repr__(self) -> str:
        """The run's identity and outcome, not its whole record."""
        return (f"RunReport(saga={self.run.name!r}, saga_id={self.run.saga_id!r}, "
                f"status={self.run.status.value!r}, attempts={len(self.attempts)})")

    run: SagaRun
    """The run as recorded (``engine.get``)."""
    saga: Saga
    """The saga's definition."""
    attempts: tuple[Attempt, ...]
    """Every attempt of every action and compensation, in the order they started."""

    @classmethod
    def of(cls, run: SagaRun, saga: Saga) -> RunReport:
        """The report of a recorded run of ``saga``."""
        return cls(run, saga, tuple(attempts_in(run.log)))

    @property
    def status(self) -> SagaStatus:
        """Where the run stands (final, once :meth:`SagaTestHarness.run` returned)."""
        return self.run.status

    @property
    def saga_id(self) -> str:
        """The run's id."""
        return self.run.saga_id

    @property
    def compensations(self) -> list[str]:
        """The compensations that completed, by their own names, in the order they ran."""
        return list(self.run.compensations)

    def ran(self) -> list[str]:
        """Every attempt, in order, as ``action:<step>`` / ``compensation:<step>``.

        An operation tried three times appears three times.
        """
        return [a.operation for a in self.attempts]

    def count(self, step: str, *, compensation: bool = False) -> int:
        """How many attempts of the step's action (or its compensation) started.

        Raises:
            ValueError: The saga has no such step (or the step no compensation).
        """
        check_operation(self.saga, step, compensation)
        role = Role.COMPENSATION if compensation else Role.ACTION
        return sum(1 for a in self.attempts if a.step == step and a.role is role)

    def describe(self) -> str:
        """The run in a few lines: status, failed step and error, then each attempt."""
        run = self.run
        lines = [f"saga {run.name} {run.saga_id} ended {run.status.value}"]
        if run.failed_step:
            lines[0] += f", failed at {run.failed_step}"
        if run.error is not None:
            lines.append(f"error: {run.error.type.rsplit('.', 1)[-1]}: {run.error.message}")
        if run.undone:
            lines.append(f"left undone: {', '.join(run.undone)}")
        lines.append("attempts, in the order they ran:")
        lines += [f"  {i}. {a}" for i, a in enumerate(self.attempts, start=1)] or ["  (none)"]
        return "\n".join(lines)

    def assert_status(self, expected: SagaStatus | str) -> None:
        """Fail unless the run ended in ``expected``."""
        __tracebackhide__ = True
        if self.status != SagaStatus(expected):
            raise AssertionError(
                f"expected the saga to end {SagaStatus(expected).value}, "
                f"but it is {self.status.value}\n{self.describe()}"
            )

    def assert_compensated_in_order(self, expected: Sequence[str]) -> None:
        """Fail unless exactly these compensations completed, in this order.

        Names are the compensations' own (``release_inventory``), as in
        ``SagaRun.compensations``; ``[]`` asserts that nothing was compensated.
        """
        __tracebackhide__ = True
        self._assert_sequence(
            "compensations", list(expected), self.compensations,
            "names are the compensations' own: "
            + ", ".join(f"{s.compensation.short_name} undoes {s.name}"
                        for s in self.saga.steps if s.compensation is not None),
        )

    def assert_ran(self, expected: Sequence[str]) -> None:
        """Fail unless exactly these attempts ran, in this order (as :meth:`ran` lists)."""
        __tracebackhide__ = True
        self._assert_sequence("attempts", list(expected), self.ran(),
                              "write each attempt as action:<step> or compensation:<step>")

    def _assert_sequence(self, what: str, expected: list[str], actual: list[str],
                         hint: str) -> None:
        __tracebackhide__ = True
        if expected == actual:
            return
        diff = "\n".join(difflib.ndiff(expected, actual))
        raise AssertionError(
            f"{what} differ from those expected\n  expected: {expected}\n"
            f"  actual:   {actual}\n(- expected only, + actual only)\n{diff}\n"
            f"({hint})\n{self.describe()}"
        )


def check_operation(saga: Saga, step: str, compensation: bool) -> None:
    """Refuse a step the saga lacks, or a compensation the step lacks, naming the real ones."""
    names = [s.name for s in saga.steps]
    if step not in names:
        raise ValueError(f"saga {saga.name!r} has no step {step!r} (its steps: "
                         f"{', '.join(names)})")
    if compensation and saga.step(step).compensation is None:
        undoable = [s.name for s in saga.steps if s.compensation is not None]
        raise ValueError(f"step {step!r} of saga {saga.name!r} has no compensation (steps "
                         f"with one: {', '.join(undoable) or 'none'})")
