"""Testing your own sagas: fail chosen steps, run on a real worker, ask what ran.

Fail a chosen step or compensation (once, n times, always), run the saga on a real Celery
worker in the test process, then ask what ran, in which order and how often.

Example:
    >>> with SagaTestHarness(engine) as harness:      # starts a worker in this process
    ...     harness.fail("order_processing", "process_payment", times=None)   # always
    ...     report = harness.run("order_processing", {"customer_id": "CUST-1", ...})
    >>> report.assert_compensated_in_order(["release_inventory", "cancel_order"])
    >>> report.count("process_payment")
    1

The harness runs sagas for real: the engine's Celery tasks, chains, retries and errbacks,
on a Celery worker in a thread of the test process (:class:`InProcessWorker`), with the
saga's record in Redis. While the harness is open, the messages of the engine's sagas that
this process sends go to the worker's own queue (steps that name a queue keep it, and the
worker consumes those queues too), so other workers of the same app do not take them.

Faults are the engine's injected faults (``RedisStore.inject_fault``): the chosen attempts
fail inside the claim, before the function runs, with :class:`~sagaline.InjectedFaultError`.
The harness's worker obeys them while it runs; a fault applies to every run of that saga
until the harness closes (or :meth:`SagaTestHarness.clear_faults`).

With pytest, ``pytest_plugins = ["sagaline.pytest_plugin"]`` gives the ``saga_harness``
fixture; see that module.
"""

from __future__ import annotations

import difflib
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from ._inprocess import InProcessWorker
from .engine import Sagaline
from .errors import WaitTimeoutError
from .record import SagaRun, Transition
from .saga import Saga
from .status import Role, SagaStatus, StepStatus

__all__ = ["Attempt", "InProcessWorker", "RunReport", "SagaTestHarness", "attempts_in",
           "named_queues", "worker_for"]

#: How long :meth:`SagaTestHarness.run` waits for a saga's final state, by default.
DEFAULT_TIMEOUT_S = 60.0

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

    An attempt ends with ``completed``, ``retrying`` or ``failed``; a failure recorded
    without a start (a worker lost mid-attempt) counts as an attempt of its own.
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
            ended = Attempt(entry.step, Role(role), entry.attempt or 0, _ENDS[what],
                            _error_of(entry))
            index = open_at.pop(key, None)
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
        _check_operation(self.saga, step, compensation)
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


def _check_operation(saga: Saga, step: str, compensation: bool) -> None:
    names = [s.name for s in saga.steps]
    if step not in names:
        raise ValueError(f"saga {saga.name!r} has no step {step!r} (its steps: "
                         f"{', '.join(names)})")
    if compensation and saga.step(step).compensation is None:
        undoable = [s.name for s in saga.steps if s.compensation is not None]
        raise ValueError(f"step {step!r} of saga {saga.name!r} has no compensation (steps "
                         f"with one: {', '.join(undoable) or 'none'})")


class SagaTestHarness:
    """Runs an engine's sagas on an in-process worker, with chosen operations failing.

    Args:
        engine: The engine whose sagas to run (the one your app's workers load).
        worker: A worker to share (a session's); by default the harness starts its own
            when opened and stops it when closed.
        timeout: Seconds :meth:`run` and :meth:`wait` wait for a final state by default.

    Open it with ``with`` (or :meth:`open` / :meth:`close`). Opening clears injected faults,
    starts the worker if it has none of its own yet, makes the engine's store obey faults,
    and routes the engine's saga messages that this process sends to the worker's queue;
    closing undoes each of those and clears the faults again.
    """

    def __init__(self, engine: Sagaline, *, worker: InProcessWorker | None = None,
                 timeout: float = DEFAULT_TIMEOUT_S) -> None:
        """Prepare a harness; nothing starts until it is opened."""
        self.engine = engine
        self.timeout = timeout
        self._shared = worker
        self._worker: InProcessWorker | None = None
        self._owns_worker = False
        self._route: Callable[..., dict[str, str] | None] | None = None
        self._honoured: bool | None = None

    @property
    def worker(self) -> InProcessWorker:
        """The worker the harness runs sagas on.

        Raises:
            RuntimeError: The harness is not open.
        """
        if self._worker is None:
            raise RuntimeError("the harness is not open: use 'with SagaTestHarness(engine) "
                               "as harness:' or call harness.open() first")
        return self._worker

    def open(self) -> SagaTestHarness:
        """Clear faults, start the worker (unless shared), obey faults, route to it."""
        if self._worker is not None:
            return self
        self.engine.store.clear_faults()
        worker = self._shared
        if worker is None:
            worker = worker_for(self.engine)
            worker.start()
            self._owns_worker = True
        elif not worker.running:
            raise RuntimeError(f"the shared worker {worker.hostname} is not running")
        elif worker.app is not self.engine.app:
            raise RuntimeError(f"the shared worker {worker.hostname} runs another Celery app "
                               "than the engine's")
        self._worker = worker
        self._honoured = self.engine.store.honour_faults
        self.engine.store.honour_faults = True
        self._route = _install_route(self.engine, worker.queue)
        return self

    def close(self) -> None:
        """Stop routing, clear faults, restore the store's setting, stop an own worker."""
        if self._worker is None:
            return
        worker, self._worker = self._worker, None
        try:
            if self._route is not None:
                _remove_route(self.engine, self._route)
                self._route = None
            self.engine.store.clear_faults()
        finally:
            if self._honoured is not None:
                self.engine.store.honour_faults = self._honoured
                self._honoured = None
            if self._owns_worker:
                self._owns_worker = False
                worker.stop()

    def __enter__(self) -> SagaTestHarness:
        """Open the harness."""
        return self.open()

    def __exit__(self, *exc: object) -> None:
        """Close the harness."""
        self.close()

    # -- faults ---------------------------------------------------------------------------

    def fail(self, saga: Saga | str, step: str, *, compensation: bool = False,
             times: int | None = 1, message: str = "injected fault") -> None:
        """Make the step's action (or its compensation) fail.

        Args:
            saga: The saga, or its registered name.
            step: The step's name.
            compensation: Fail the step's compensation instead of its action.
            times: How many of the next attempts fail (``None``: every attempt). Each
                failed attempt counts, whichever run it belongs to; the retry policy
                decides whether another attempt follows.
            message: The message of the :class:`~sagaline.InjectedFaultError` raised.

        Raises:
            ValueError: No such saga, step or compensation, or ``times`` below 1.
        """
        definition = self._saga(saga)
        _check_operation(definition, step, compensation)
        if times is not None and times < 1:
            raise ValueError(f"times must be 1 or more (None: always), not {times}")
        role = Role.COMPENSATION if compensation else Role.ACTION
        self.engine.store.inject_fault(definition.name, step, role, times=times,
                                       message=message)

    def clear_faults(self) -> None:
        """Remove every injected fault."""
        self.engine.store.clear_faults()

    # -- running --------------------------------------------------------------------------

    def run(self, saga: Saga | str, inputs: BaseModel | Mapping[str, Any], *,
            timeout: float | None = None, correlation_id: str | None = None) -> RunReport:
        """Start the saga, wait until it ends, and report what ran.

        Raises:
            RuntimeError: The harness is not open.
            InvalidInputError: The inputs are invalid.
            WaitTimeoutError: It did not end in time; the message tells what ran so far.
        """
        self.worker  # noqa: B018 - refuses to start a saga no worker of ours would run
        handle = self.engine.start(saga, inputs, correlation_id=correlation_id)
        return self.wait(handle.saga_id, timeout=timeout)

    def wait(self, saga_id: str, *, timeout: float | None = None) -> RunReport:
        """Wait until a saga started by other means (your app's code) ends; report it.

        Raises:
            WaitTimeoutError: It did not end in time; the message tells what ran so far.
        """
        limit = self.timeout if timeout is None else timeout
        try:
            self.engine.store.wait(saga_id, limit)
        except WaitTimeoutError as error:
            raise WaitTimeoutError(f"{error}\n{self.report(saga_id).describe()}") from None
        return self.report(saga_id)

    def report(self, saga_id: str) -> RunReport:
        """What a saga run did so far, without waiting."""
        run = self.engine.get(saga_id)
        return RunReport.of(run, self.engine.registry.get(run.name))

    def _saga(self, saga: Saga | str) -> Saga:
        if isinstance(saga, Saga) and saga.name not in self.engine.registry:
            self.engine.register(saga)  # as engine.start would; the worker shares the engine
        name = saga if isinstance(saga, str) else saga.name
        if name not in self.engine.registry:
            known = ", ".join(s.name for s in self.engine.registry) or "none"
            raise ValueError(f"the engine has no saga {name!r} (it has: {known})")
        return self.engine.registry.get(name)


def named_queues(engine: Sagaline) -> list[str]:
    """The queues the engine's steps name (their own, or their tasks'), sorted."""
    queues: set[str] = set()
    for saga in engine.registry:
        for step in saga.steps:
            for task in (step.action, step.compensation):
                queue = getattr(step, "queue", None) or getattr(task, "queue", None)
                if task is not None and queue:
                    queues.add(str(queue))
    return sorted(queues)


def operation_task_names(engine: Sagaline) -> set[str]:
    """The Celery task names of every action and compensation of the engine's sagas."""
    names: set[str] = set()
    for saga in engine.registry:
        for step in saga.steps:
            for task in (getattr(step, "action", None), getattr(step, "compensation", None)):
                if task is not None:
                    names.add(str(task.name))
    return names


_ROUTES_LOCK = threading.Lock()


def _install_route(engine: Sagaline, queue: str) -> Callable[..., dict[str, str] | None]:
    """Send the engine's operation messages that name no queue to ``queue``.

    Celery asks its router for every message this process sends (the first step's, and
    those the in-process worker sends: the next step, retries, compensations); a route
    returned here applies unless the message already names a queue.
    """

    def route(name: str, args: Any, kwargs: Any, options: Mapping[str, Any],
              task: Any = None, **_: Any) -> dict[str, str] | None:
        if options.get("queue") or name not in operation_task_names(engine):
            return None
        return {"queue": queue}

    router = engine.app.amqp.router
    with _ROUTES_LOCK:
        router.routes = [route, *router.routes]
    return route


def _remove_route(engine: Sagaline, route: Callable[..., Any]) -> None:
    router = engine.app.amqp.router
    with _ROUTES_LOCK:
        router.routes = [r for r in router.routes if r is not route]


def worker_for(engine: Sagaline, *, concurrency: int = 2, pool: str = "threads"
               ) -> InProcessWorker:
    """An in-process worker for the engine's app, consuming the queues its steps name too."""
    return InProcessWorker(engine.app, queues=named_queues(engine), concurrency=concurrency,
                           pool=pool)

