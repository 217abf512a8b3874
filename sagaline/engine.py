"""The engine: binds sagas to a Celery app and a store, starts runs and reports on them."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from celery import Celery
from pydantic import BaseModel

from . import _celery, ids, telemetry
from ._runtime import Runtime, describe_error
from .errors import ConfigurationError, EnqueueError, SagaNotFoundError, StateError
from .record import SagaRun
from .registry import SagaRegistry
from .saga import Saga
from .status import SagaStatus
from .store import RedisStore
from .supervisor import Supervisor

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
        max_recoveries: int = 5,
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

        Raises:
            ConfigurationError: The app would accept pickle or another unsafe serializer.
        """
        _check_serialization(app)
        self.app = app
        self.store = store
        store.honour_faults = fault_injection
        self.registry = SagaRegistry()
        self.runtime = Runtime(self)
        self.lease_s = lease.total_seconds()
        self.max_recoveries = max_recoveries
        self.supervisor = Supervisor(self)
        _celery.register_errbacks(self)
        for saga in sagas:
            self.register(saga)

    def register(self, saga: Saga) -> Saga:
        """Register a saga and its tasks on the app; returns the saga."""
        self.registry.add(saga)
        for step in saga.steps:
            _celery.bind_task(self, step.action)
            if step.compensation is not None:
                _celery.bind_task(self, step.compensation)
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
            causation_id: The id of the event or command that caused this run.

        Raises:
            UnknownSagaError: No saga of that name is registered.
            InvalidInputError: The inputs are invalid (naming each field); nothing recorded.
            InvalidCorrelationIdError: ``correlation_id`` is not a UUID; nothing recorded.
            EnqueueError: The broker refused the first message; the run is recorded failed.
        """
        definition = self.registry.get(saga) if isinstance(saga, str) else saga
        if definition.name not in self.registry:
            self.register(definition)
        values = definition.validate_inputs(inputs)
        cid = ids.correlation_id(correlation_id)
        saga_id = ids.new_id()
        trace = telemetry.TraceContext.new()
        headers = _celery.headers_for(saga_id, cid, trace.traceparent)
        signature = _celery.forward_chain(self, definition, saga_id, headers=headers)
        deadline_at = None
        if definition.deadline is not None:
            deadline_at = time.time() + definition.deadline.total_seconds()
        if not self.store.create(
            saga_id, name=definition.name, correlation_id=cid, causation_id=causation_id,
            inputs=values, plan=[s.name for s in definition.steps], deadline_at=deadline_at,
            trace=trace,
        ):
            raise StateError(f"saga id {saga_id} is taken; this should not happen with UUIDv7")
        try:
            signature.apply_async()
        except Exception as error:
            self.store.abandon(saga_id, describe_error(error, step=""))
            raise EnqueueError(
                f"saga {saga_id} was recorded but could not be enqueued ({error}); "
                "it is recorded as failed. Check that the broker is reachable."
            ) from error
        telemetry.execute(telemetry.SAGA_START, {"system_time_s": time.time()}, {
            "saga": definition.name, "saga_id": saga_id, "correlation_id": cid,
            "traceparent": trace.traceparent, "trace_parent_id": trace.parent_id,
            "total": len(definition.steps),
        })
        return SagaHandle(self, saga_id, cid)

    def cancel(self, saga_id: str, reason: str = "cancelled by request") -> SagaStatus:
        """Cancel a running saga; see :meth:`Supervisor.cancel`."""
        return self.supervisor.cancel(saga_id, reason)

    def continue_rollback(self, saga_id: str) -> None:
        """Enqueue the compensations a compensating saga has left.

        Nothing is enqueued while the first must wait for an action still in flight: that
        action's end enqueues them.
        """
        left, awaiting = self.store.compensations_left(saga_id)
        if not left or awaiting:
            return
        _celery.compensation_chain(self, self.saga_of(saga_id), saga_id, left).apply_async()

    def saga_of(self, saga_id: str) -> Saga:
        """The definition a recorded run was started from.

        Raises:
            SagaNotFoundError: No such run is recorded.
            UnknownSagaError: Its saga is not registered with this engine.
        """
        name = self.store.client.hget(self.store.saga_keys(saga_id)[0], "name")
        if not name:
            raise SagaNotFoundError(f"no saga {saga_id!r} is recorded")
        return self.registry.get(str(name))

    def get(self, saga_id: str) -> SagaRun:
        """The run as recorded.

        Raises:
            SagaNotFoundError: No such run is recorded (never was, or expired).
        """
        return self.store.load(saga_id, task_names=self._task_names)

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

    def _task_names(self, name: str) -> dict[str, tuple[str, str | None]]:
        if name not in self.registry:
            return {}
        saga = self.registry.get(name)
        return {
            s.name: (s.action.name, s.compensation.name if s.compensation else None)
            for s in saga.steps
        }


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
