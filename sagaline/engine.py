"""The engine's face: binds sagas to a Celery app and a store, starts runs, reports on them.

This module only wires the parts (the store, the event bus and outbox, the runtime and the
Celery transport) and offers what a caller needs: :meth:`Sagaline.start`, :meth:`get
<Sagaline.get>`, :meth:`wait <Sagaline.wait>`, :meth:`list <Sagaline.list>`, :meth:`cancel
<Sagaline.cancel>`, :meth:`signal <Sagaline.signal>`. How a saga runs is told in
:mod:`sagaline.runtime`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

from celery import Celery
from pydantic import BaseModel

from sagaline import ids
from sagaline.child import SubSaga
from sagaline.errors import (
    IdempotencyConflictError,
    InvalidInputError,
    SagasDisabledError,
    StateError,
)
from sagaline.events.bus import EventBus
from sagaline.events.outbox import Outbox
from sagaline.naming import name_problems
from sagaline.outcome import SagaRun, SignalReceipt
from sagaline.registry import SagaRegistry
from sagaline.runtime import Driver, NestedSagas, Runtime, Signals, Supervisor
from sagaline.saga import Saga
from sagaline.status import SagaStatus
from sagaline.store.redis import RedisStore
from sagaline.store.replies import Creation
from sagaline.task import SagaTask
from sagaline.transport import CeleryTransport

log = logging.getLogger("sagaline.engine")


class Choreography(Protocol):
    """A choreographed saga bound to an engine (see :class:`sagaline.ChoreographySaga`)."""

    @property
    def name(self) -> str:
        """The saga's name."""


@dataclass(frozen=True)
class SagaHandle:
    """A started saga: its id, and a way to wait for its outcome."""

    engine: Sagaline
    saga_id: str
    """The run's id."""
    correlation_id: str
    """The run's correlation id."""

    def wait(self, timeout: float = 60.0) -> SagaRun:
        """Block until the run is final and return it.

        Raises:
            WaitTimeoutError: It was not final within ``timeout`` seconds.
        """
        return self.engine.wait(self.saga_id, timeout)

    def get(self) -> SagaRun:
        """The run as recorded now."""
        return self.engine.get(self.saga_id)


class Sagaline:
    """A saga engine on one Celery app and one Redis store.

    Create one in the module workers load (``celery -A config worker``), with every saga
    the workers may run; creating it registers each saga's tasks on the app.

    Example:
        >>> engine = Sagaline(app, RedisStore.from_url(url), sagas=[order_processing])
        >>> handle = engine.start("order_processing", {"customer_id": "CUST-123", ...})
        >>> handle.wait(30).status
        <SagaStatus.COMPLETED: 'completed'>
    """

    def __init__(
        self, app: Celery, store: RedisStore, sagas: Sequence[Saga] = (), *,
        fault_injection: bool = False, lease: timedelta = timedelta(seconds=30),
        max_recoveries: int = 5, bus: EventBus | None = None, lifecycle_events: bool = True,
        enabled: bool = True, run_bare_messages: bool = False,
    ) -> None:
        """Bind to ``app`` and ``store``, and register ``sagas``.

        Args:
            app: The Celery app; it must accept JSON only (pickle is refused).
            store: Where runs are recorded.
            sagas: The sagas workers may run.
            fault_injection: Whether this process obeys injected faults (tests, drills).
            lease: How long a running attempt's claim lasts without a heartbeat; a worker
                lost mid-step is noticed this long after its last heartbeat.
            max_recoveries: How often the sweep drives one saga on without progress before
                it fails the operation it waits on; also how often an operation lost with
                its process is run again before it fails (``AttemptsLostError``).
            bus: Where events go (the engine's lifecycle events and those steps emit);
                ``None``: nowhere, though every saga's log still records them.
            lifecycle_events: Whether the engine's lifecycle events go to the bus (the
                feature flag; events steps emit go either way).
            enabled: Whether sagas may start here (the feature flag); while off,
                :meth:`start` refuses and enqueues nothing. Sagas already running go on.
            run_bare_messages: Whether a message for a saga task that carries no saga
                envelope runs the plain function (for unit tests); by default a worker
                refuses it, since it would run a participant with no saga record.

        Raises:
            ConfigurationError: The app would accept pickle or another unsafe serializer.
        """
        # Refuses an unsafe app before anything else is touched.
        self.transport = CeleryTransport(app, run_bare_messages=run_bare_messages)
        self.app = app
        self.store = store
        store.honour_faults = fault_injection
        self.registry = SagaRegistry()
        self.tasks: dict[str, SagaTask] = {}
        """The saga tasks registered, by name."""
        self.bus = bus
        self.outbox = Outbox(store, bus, lifecycle_events=lifecycle_events)
        self.enabled = enabled
        self.choreographies: dict[str, Choreography] = {}
        """Choreographed sagas bound to this engine, by name."""
        self.driver = Driver(store, self.registry, self.tasks, self.transport, self.outbox)
        nested = NestedSagas(store, self.driver)
        self.signals = Signals(store, self.driver)
        self.runtime = Runtime(store, self.driver, nested, self.outbox,
                               lease_s=lease.total_seconds(),
                               check_event=bus.check if bus is not None else _name_check,
                               max_recoveries=max_recoveries, signals=self.signals)
        self.supervisor = Supervisor(store, self.driver, nested, self.outbox,
                                     max_recoveries=max_recoveries)
        self.transport.bind(self.runtime, self.supervisor)
        if bus is not None:
            bus.bind(app)
        for saga in sagas:
            self.register(saga)

    def register(self, saga: Saga) -> Saga:
        """Register a saga and its tasks on the app; returns the saga.

        Raises:
            DefinitionError: A saga of that name, or a task of one of its names, is
                registered already with another definition.
        """
        self.registry.add(saga)
        for step in saga.steps:
            self.register_tasks(*step.tasks())
            if isinstance(step, SubSaga) and step.child.name not in self.registry:
                self.register(step.child)
        return saga

    def register_tasks(self, *tasks: SagaTask) -> None:
        """Register saga tasks that only assembled sagas (or added steps) use."""
        for task in tasks:
            self.transport.register(task)
            self.tasks[task.name] = task

    def start(
        self,
        saga: Saga | str,
        inputs: BaseModel | Mapping[str, Any],
        *,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> SagaHandle:
        """Validate, record and enqueue a run; return at once with its handle.

        Args:
            saga: The saga, or its registered name.
            inputs: Validated with the saga's input model before anything is written.
            correlation_id: The business flow's id; a UUIDv7 is generated when ``None``.
            causation_id: The id (a UUID) of the event or command that caused this run;
                when ``None``, the start itself is the cause and gets a new UUIDv7, so the
                run's ``saga.started`` always names what triggered it.
            idempotency_key: Starts the saga once: a second start with the same key (while
                its run is kept, i.e. until the retention time after it ended) returns the
                first run's handle and starts nothing, also when both start at the same
                instant from two processes. Up to 200 printable characters; a web app
                passes the request's ``Idempotency-Key``.

        Raises:
            UnknownSagaError: No saga of that name is registered.
            InvalidInputError: The inputs are invalid (naming each field); nothing recorded.
            InvalidCorrelationIdError: ``correlation_id`` or ``causation_id`` is not a UUID;
                nothing recorded.
            SagasDisabledError: Sagas are switched off here; nothing recorded.
            IdempotencyConflictError: ``idempotency_key`` started another saga, or this
                one with other inputs; nothing recorded.
            EnqueueError: The broker refused the first message; the run is recorded failed.
        """
        if not self.enabled:
            raise SagasDisabledError(
                "sagas are switched off in this process (SAGALINE_SAGAS_ENABLED=false); "
                "nothing was started. Switch them on to start sagas."
            )
        definition = self.registry.get(saga) if isinstance(saga, str) else saga
        if getattr(definition, "assembled", False):
            for step in definition.steps:
                self.register_tasks(*step.tasks())
        elif definition.name not in self.registry:
            self.register(definition)
        values = definition.validate_inputs(inputs)
        cid = ids.correlation_id(correlation_id)
        trigger = ids.causation_id(causation_id)
        saga_id = ids.new_id()
        key = checked_idempotency_key(definition.name, idempotency_key)
        creation = self.driver.launch(definition, saga_id, values, cid, trigger, None, key)
        return self._handle(definition.name, creation, key, cid)

    def _handle(self, name: str, creation: Creation, key: str | None, cid: str
                ) -> SagaHandle:
        """The handle of the run a start stands for; raises when it stands for none."""
        if creation.outcome == "duplicate":
            log.info("[saga %s] %s already started with idempotency key %r: not started again",
                     creation.saga_id, name, key)
            return SagaHandle(self, creation.saga_id, creation.detail)
        if creation.outcome == "conflict":
            raise IdempotencyConflictError(
                f"idempotency key {key!r} already started saga {creation.saga_id} "
                f"({creation.detail}) with other inputs; nothing was started. Use a new key "
                "for a new request, the same key only to repeat the same one.")
        if not creation.created:
            raise StateError(f"saga id {creation.saga_id} is taken; this should not happen "
                             "with UUIDv7")
        log.info("[saga %s] %s started (correlation %s)", creation.saga_id, name, cid)
        return SagaHandle(self, creation.saga_id, cid)

    def cancel(self, saga_id: str, reason: str = "cancelled by request") -> SagaStatus:
        """Cancel a running saga; see :meth:`Supervisor.cancel`."""
        return self.supervisor.cancel(saga_id, reason)

    def signal(self, saga_id: str, name: str, payload: dict[str, Any] | None = None
               ) -> SignalReceipt:
        """Send signal ``name`` (an approval, a webhook's news) to a running saga.

        The signal is kept on the saga's record, so a step that waits for it later
        (``ctx.wait_for``) finds it; a step waiting for it now runs again. The same
        payload sent twice is kept once (``duplicate``).

        Raises:
            InvalidSignalError: The name or payload (a JSON object, 64 KiB at most) is not
                valid; nothing was kept.
            SagaNotFoundError: No such saga is recorded.
            StateError: The saga no longer runs; the signal was not kept.
        """
        try:
            return self.signals.send(saga_id, name, payload)
        finally:
            self.outbox.flush_soon(saga_id)

    def get(self, saga_id: str) -> SagaRun:
        """The run as recorded.

        Raises:
            SagaNotFoundError: No such run is recorded (never was, or expired).
        """
        return self.driver.load(saga_id)

    def wait(self, saga_id: str, timeout: float = 60.0) -> SagaRun:
        """Block until the run is final and return it.

        Raises:
            WaitTimeoutError: It was not final within ``timeout`` seconds.
        """
        self.store.wait(saga_id, timeout)
        return self.get(saga_id)

    def list(self, status: SagaStatus | None = None, *, limit: int = 50) -> list[SagaRun]:
        """The newest runs, newest first, optionally of one status."""
        runs = []
        for saga_id in self.store.list_ids(status, limit=limit):
            try:
                runs.append(self.get(saga_id))
            except StateError:
                continue
        return runs


#: The longest idempotency key accepted.
MAX_IDEMPOTENCY_KEY = 200


def checked_idempotency_key(saga: str, key: str | None) -> str | None:
    """The key as given, or ``None``; raises :class:`InvalidInputError` naming the problem."""
    if key is None:
        return None
    if not isinstance(key, str) or not key or len(key) > MAX_IDEMPOTENCY_KEY \
            or not key.isprintable():
        raise InvalidInputError(saga, [{
            "field": "idempotency_key",
            "problem": f"must be 1 to {MAX_IDEMPOTENCY_KEY} printable characters, not "
                       f"{str(key)[:40]!r}"}])
    return key


def _name_check(name: str, payload: dict[str, Any] | None = None) -> list[str]:
    """What is wrong with an event's name when no bus (so no taxonomy) is set."""
    return name_problems(name)
