"""The engine: binds sagas to a Celery app and a store, starts runs and reports on them."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

from celery import Celery
from pydantic import BaseModel

from . import _celery, _json, ids, telemetry
from ._runtime import Runtime, describe_error
from .bus import EventBus
from .child import SubSaga
from .choreography import ChoreographySaga
from .dynamic import added_steps, extend, saga_from_json, saga_to_json
from .errors import (
    ConfigurationError,
    DefinitionError,
    EnqueueError,
    SagaNotFoundError,
    SagasDisabledError,
    StateError,
    UnknownSagaError,
)
from .events import name_problems
from .outbox import Outbox
from .record import SagaRun
from .registry import SagaRegistry
from .saga import Saga
from .status import FINAL_STATUSES, Role, SagaStatus
from .store import RedisStore
from .supervisor import Supervisor
from .task import SagaTask

log = logging.getLogger("sagaline.engine")


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
        enabled: bool = True,
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
                it fails the operation it waits on.
            bus: Where events go (the engine's lifecycle events and those steps emit);
                ``None``: nowhere, though every saga's log still records them.
            lifecycle_events: Whether the engine's lifecycle events go to the bus (the
                feature flag; events steps emit go either way).
            enabled: Whether sagas may start here (the feature flag); while off,
                :meth:`start` refuses and enqueues nothing. Sagas already running go on.

        Raises:
            ConfigurationError: The app would accept pickle or another unsafe serializer.
        """
        _check_serialization(app)
        self.app = app
        self.store = store
        store.honour_faults = fault_injection
        self.registry = SagaRegistry()
        self.tasks: dict[str, SagaTask] = {}
        self._assembled: dict[str, Saga] = {}
        self.runtime = Runtime(self)
        self.lease_s = lease.total_seconds()
        self.max_recoveries = max_recoveries
        self.supervisor = Supervisor(self)
        self.bus = bus
        self.choreographies: dict[str, ChoreographySaga] = {}
        """Choreographed sagas bound to this engine, by name."""
        self.outbox = Outbox(store, bus, lifecycle_events=lifecycle_events)
        self.enabled = enabled
        if bus is not None:
            bus.bind(app)
        _celery.register_errbacks(self)
        for saga in sagas:
            self.register(saga)

    def register(self, saga: Saga) -> Saga:
        """Register a saga and its tasks on the app; returns the saga."""
        self.registry.add(saga)
        for step in saga.steps:
            for task in step.tasks():
                _celery.bind_task(self, task)
            if isinstance(step, SubSaga) and step.child.name not in self.registry:
                self.register(step.child)
        return saga

    def register_tasks(self, *tasks: SagaTask) -> None:
        """Register saga tasks that only assembled sagas (or added steps) use."""
        for task in tasks:
            _celery.bind_task(self, task)

    def definition_of(self, name: str, saga_id: str) -> Saga:
        """The definition a run follows, with the steps its steps added.

        That is its registered saga, or the one recorded with it when it was assembled at
        runtime (:class:`~sagaline.SagaBuilder`).

        Raises:
            UnknownSagaError: The saga is neither registered nor recorded with the run.
        """
        saga = self._assembled.get(saga_id)
        if saga is None and name in self.registry:
            saga = self.registry.get(name)
        if saga is None:
            raw = self.store.client.hget(self.store.saga_keys(saga_id)[0], "definition")
            if not raw:
                return self.registry.get(name)
            saga = saga_from_json(_json.loads(cast(str, raw)), self.tasks)
            if len(self._assembled) > 1000:
                self._assembled.clear()
            self._assembled[saga_id] = saga
        expanding = [s for s in saga.steps if s.adds]
        if not expanding:
            return saga
        results = self.store.results(saga_id, [s.name for s in expanding])
        for step in expanding:
            steps = added_steps(step, results[step.name], self.tasks)
            if steps:
                saga = extend(saga, step.name, steps)
        return saga

    def start(
        self,
        saga: Saga | str,
        inputs: BaseModel | Mapping[str, Any],
        *,
        correlation_id: str | None = None,
        causation_id: str | None = None,
    ) -> SagaHandle:
        """Validate, record and enqueue a run; return at once with its handle.

        Args:
            saga: The saga, or its registered name.
            inputs: Validated with the saga's input model before anything is written.
            correlation_id: The business flow's id; a UUIDv7 is generated when ``None``.
            causation_id: The id (a UUID) of the event or command that caused this run;
                when ``None``, the start itself is the cause and gets a new UUIDv7, so the
                run's ``saga.started`` always names what triggered it.

        Raises:
            UnknownSagaError: No saga of that name is registered.
            InvalidInputError: The inputs are invalid (naming each field); nothing recorded.
            InvalidCorrelationIdError: ``correlation_id`` or ``causation_id`` is not a UUID;
                nothing recorded.
            SagasDisabledError: Sagas are switched off here; nothing recorded.
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
        if not self._launch(definition, saga_id, values, cid, trigger, None):
            raise StateError(f"saga id {saga_id} is taken; this should not happen with UUIDv7")
        log.info("[saga %s] %s started (correlation %s)", saga_id, definition.name, cid)
        return SagaHandle(self, saga_id, cid)

    def start_child(self, saga: Saga, inputs: dict[str, Any], child_id: str, *,
                    parent: tuple[str, str], correlation_id: str,
                    causation_id: str | None = None) -> None:
        """Start a parent step's child saga, once (a second call finds it recorded).

        ``causation_id`` is the parent step's ``saga.step.started`` event, so the child's
        ``saga.started`` names it as its cause.
        """
        if self._launch(saga, child_id, inputs, correlation_id, causation_id or parent[0],
                        parent):
            log.info("[saga %s] %s started as the child of %s step %s", child_id, saga.name,
                     *parent)

    def undo_child(self, saga: Saga, child_id: str) -> None:
        """Roll back a completed child saga, for its parent's compensation."""
        error: dict[str, Any] = {"type": "sagaline.errors.SagaError", "step": None,
                                 "details": {},
                 "message": "its parent saga is compensating the step that ran it"}
        if self.store.undo_completed(child_id, table=saga.rollback_table(), error=error):
            self.continue_rollback(child_id)
        # It may have had nothing to undo, or have been rolled back already: its end, or
        # the end it had, continues the parent.
        if self.store.status(child_id) in FINAL_STATUSES:
            self.store.client.rpush(f"{self.store.prefix}children_done", child_id)
        self.wake_parents()

    def wake_parents(self) -> None:
        """Deliver the ends of child sagas to their parents, and drive the parents on."""
        while (child_id := self.store.next_child_done()) is not None:
            try:
                self.deliver_child_end(child_id)
            except SagaNotFoundError:
                log.warning("[saga %s] ended, but its parent is not recorded", child_id)

    def deliver_child_end(self, child_id: str) -> str:
        """Tell a final child saga's parent step how the child ended; drive the parent on.

        Returns what the parent's record said (``completed``, ``failed``, ``late``,
        ``undone`` or ``stale``; ``running`` when the child has not ended).
        """
        child = cast(dict[str, str],
                     self.store.client.hgetall(self.store.saga_keys(child_id)[0]))
        status = child.get("status", "")
        if not status or SagaStatus(status) not in FINAL_STATUSES:
            return "running"
        parent_id, step = child.get("parent_id", ""), child.get("parent_step", "")
        parent = self.saga_of(parent_id)
        error = {"type": "sagaline.errors.StepError", "step": step, "attempt": None,
                 "retryable": False,
                 "message": f"child saga {child.get('name')} ({child_id}) ended {status}",
                 "details": {"child_id": child_id,
                             "child_error": _json.loads(child.get("error")) or {}}}
        outcome = self.store.child_ended(parent_id, step, child_status=status,
                                         result=_json.loads(child.get("result")), error=error)
        self.follow_child_outcome(parent, parent_id, step, outcome, error)
        return outcome

    def follow_child_outcome(self, parent: Saga, parent_id: str, step: str, outcome: str,
                             error: dict[str, Any]) -> None:
        """Drive a parent on after its step's child ended (``child.lua``'s answer)."""
        if outcome == "completed":
            self.drive_forward(parent, parent_id, parent.element_index(step) + 1)
        elif outcome == "failed":
            rollback = self.store.fail_saga(parent_id, failed_step=step, error=error,
                                            table=parent.rollback_table())
            if rollback is not None:
                _celery.start_rollback(self, parent, parent_id, rollback)
        elif outcome in ("late", "undone"):
            self.continue_rollback(parent_id)

    def _launch(self, definition: Saga, saga_id: str, values: dict[str, Any], cid: str,
                causation_id: str | None, parent: tuple[str, str] | None) -> bool:
        """Record a run and send its first messages; ``False`` if the id is taken."""
        deadline_at = None
        if definition.deadline is not None:
            deadline_at = time.time() + definition.deadline.total_seconds()
        recorded = None
        if getattr(definition, "assembled", False):
            recorded = _json.dumps(saga_to_json(definition))
        trace = telemetry.TraceContext.new()
        headers = _celery.headers_for(saga_id, cid, trace.traceparent)
        if not self.store.create(
            saga_id, name=definition.name, correlation_id=cid, causation_id=causation_id,
            inputs=values, plan=[s.name for s in definition.steps], deadline_at=deadline_at,
            parent=parent, definition=recorded, trace=trace,
        ):
            return False
        try:
            _celery.drive_forward(self, definition, saga_id, 0, headers)
        except Exception as error:
            self.store.abandon(saga_id, describe_error(error, step=""))
            raise EnqueueError(
                f"saga {saga_id} was recorded but could not be enqueued ({error}); "
                "it is recorded as failed. Check that the broker is reachable."
            ) from error
        finally:
            # One round: if a worker's relay has the outbox already, it publishes this too.
            self.outbox.flush(saga_id, rounds=1)
        telemetry.execute(telemetry.SAGA_START, {"system_time_s": time.time()}, {
            "saga": definition.name, "saga_id": saga_id, "correlation_id": cid,
            "traceparent": trace.traceparent, "trace_parent_id": trace.parent_id,
            "total": len(definition.steps),
        })
        return True

    def check_event(self, name: str, payload: dict[str, Any]) -> list[str]:
        """What is wrong with an event a step is about to emit (empty when nothing).

        The name must follow the convention and, when the bus has a taxonomy, be in it.
        """
        problems = name_problems(name)
        taxonomy = self.bus.taxonomy if self.bus is not None else None
        if not problems and taxonomy is not None and name not in taxonomy:
            problems = [f"{name!r} is not registered in {taxonomy.path}"]
        return problems

    def cancel(self, saga_id: str, reason: str = "cancelled by request") -> SagaStatus:
        """Cancel a running saga; see :meth:`Supervisor.cancel`."""
        return self.supervisor.cancel(saga_id, reason)

    def continue_rollback(self, saga_id: str, *, force: bool = False) -> None:
        """Enqueue the compensations a compensating saga may run now.

        Those of the rollback's next stage (a step, or a group's branches, in parallel),
        once every compensation of the stage before ended; each is enqueued once (``force``:
        again, for the recovery sweep). One that waits for its action, still in flight, is
        enqueued when that action ends.
        """
        due = self.store.next_compensations(saga_id, force=force)
        if not due:
            return
        saga = self.saga_of(saga_id)
        for step, undoes_fallback in due:
            _celery.send(self, saga, saga_id, [step], Role.COMPENSATION, undoes_fallback)

    def drive_forward(self, saga: Saga, saga_id: str, start_at: int) -> None:
        """Send the forward path from element ``start_at`` of the saga (see ``_celery``)."""
        _celery.drive_forward(self, saga, saga_id, start_at)

    def send(self, saga: Saga, saga_id: str, steps: list[str], role: Role) -> None:
        """Send one message per step for ``role`` (group branches, a fallback)."""
        _celery.send(self, saga, saga_id, steps, role)

    def finish(self, saga: Saga, saga_id: str) -> bool:
        """Complete a saga whose every element completed, with its result.

        Returns ``False`` when it was not running (another caller finished it).
        """
        needed = saga.results_for_return()
        results = self.store.results(saga_id, needed)
        inputs = self.store.inputs(saga_id)
        finished = self.store.finish(saga_id, saga.build_result(inputs, results))
        self.wake_parents()
        return finished

    def saga_of(self, saga_id: str) -> Saga:
        """The definition a recorded run was started from.

        Raises:
            SagaNotFoundError: No such run is recorded.
            UnknownSagaError: Its saga is not registered with this engine.
        """
        name = self.store.client.hget(self.store.saga_keys(saga_id)[0], "name")
        if not name:
            raise SagaNotFoundError(f"no saga {saga_id!r} is recorded")
        return self.definition_of(str(name), saga_id)

    def get(self, saga_id: str) -> SagaRun:
        """The run as recorded.

        Raises:
            SagaNotFoundError: No such run is recorded (never was, or expired).
        """
        return self.store.load(saga_id, task_names=lambda name: self._task_names(name, saga_id))

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

    def _task_names(self, name: str, saga_id: str) -> dict[str, tuple[str, str | None]]:
        try:
            saga = self.definition_of(name, saga_id)
        except (UnknownSagaError, DefinitionError):
            return {}
        names = {
            s.name: (s.action.name, s.compensation.name if s.compensation else None)
            for s in saga.steps
        }
        for s in saga.steps:
            if s.fallback is not None:
                undo = s.fallback.compensation
                names[f"{s.name}:fallback"] = (s.fallback.action.name,
                                               undo.name if undo else None)
        return names


_SAFE_SERIALIZERS = {"json", "application/json"}


def _check_serialization(app: Celery) -> None:
    """Refuse an app that would send or accept anything but JSON."""
    conf = app.conf
    problems = []
    for setting in ("task_serializer", "result_serializer"):
        if conf.get(setting) not in _SAFE_SERIALIZERS:
            problems.append(f"{setting}={conf.get(setting)!r}")
    for setting in ("accept_content", "result_accept_content"):
        values = conf.get(setting) or conf.get("accept_content") or []
        bad = [v for v in values if v not in _SAFE_SERIALIZERS]
        if bad:
            problems.append(f"{setting} includes {bad!r}")
    if problems:
        raise ConfigurationError(
            "Sagaline runs on JSON only (pickle lets anyone who can write to the broker run "
            f"code on workers); fix: {', '.join(problems)}"
        )
