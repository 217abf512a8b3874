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

from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel

from sagaline.engine import Sagaline
from sagaline.errors import WaitTimeoutError
from sagaline.saga import Saga
from sagaline.status import Role
from sagaline.testing.report import RunReport, check_operation
from sagaline.testing.worker import (
    InProcessWorker,
    install_route,
    remove_route,
    worker_for,
)

#: How long :meth:`SagaTestHarness.run` waits for a saga's final state, by default.
DEFAULT_TIMEOUT_S = 60.0


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
            RuntimeError: The harness is not open, or its worker stopped.
        """
        if self._worker is None:
            raise RuntimeError("the harness is not open: use 'with SagaTestHarness(engine) "
                               "as harness:' or call harness.open() first")
        if not self._worker.running:
            raise RuntimeError(f"the harness's worker {self._worker.hostname} is not running "
                               "(see the log of sagaline.testing)")
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
        self._route = install_route(self.engine, worker.queue)
        return self

    def close(self) -> None:
        """Stop routing, clear faults, restore the store's setting, stop an own worker."""
        if self._worker is None:
            return
        worker, self._worker = self._worker, None
        try:
            if self._route is not None:
                remove_route(self.engine, self._route)
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
            RuntimeError: The harness is not open (opening clears faults).
            ValueError: No such saga, step or compensation, or ``times`` below 1.
        """
        self.worker  # noqa: B018 - opening clears faults: a fault set before would be lost
        definition = self._saga(saga)
        check_operation(definition, step, compensation)
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
            RuntimeError: The harness is not open, or its worker stopped.
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
