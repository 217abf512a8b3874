"""The saga's moves: which definition a run follows, what runs next, and the rollback.

The :class:`Driver` decides; its :class:`~sagaline.runtime.message.Transport` carries. It
never calls back up: nested sagas (:mod:`~sagaline.runtime.nested`) use the driver, the
attempt (:mod:`~sagaline.runtime.attempt`) uses both, and the sweep
(:mod:`~sagaline.runtime.supervisor`) uses all three.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from sagaline import codec, telemetry
from sagaline.dynamic import added_steps, extend, saga_from_json, saga_to_json
from sagaline.errors import (
    DefinitionError,
    EnqueueError,
    SagaNotFoundError,
    UnknownSagaError,
    describe_error,
)
from sagaline.events.outbox import Outbox
from sagaline.outcome import SagaRun
from sagaline.parallel import Parallel
from sagaline.registry import SagaRegistry
from sagaline.runtime.message import Envelope, Transport, forward_task_ids, headers_for
from sagaline.saga import Saga
from sagaline.status import Role, SagaStatus
from sagaline.store.redis import RedisStore
from sagaline.store.replies import Creation, GroupSpec, Rollback
from sagaline.task import SagaTask

log = logging.getLogger("sagaline.driver")

#: Definitions of runs assembled at runtime kept in memory, at most.
_ASSEMBLED_CACHE = 1000


def group_spec(group: Parallel) -> GroupSpec:
    """A declared group as the store counts it."""
    return GroupSpec(group.name, group.branch_names(), group.limit)


class Driver:
    """Moves sagas on: launches them, sends what runs next, finishes and rolls them back.

    Args:
        store: Where runs are recorded.
        registry: The sagas this engine defines.
        tasks: The saga tasks registered, by name (to rebuild assembled definitions).
        transport: What carries the messages.
        outbox: Publishes a launched run's first events.
    """

    def __init__(self, store: RedisStore, registry: SagaRegistry, tasks: Mapping[str, SagaTask],
                 transport: Transport, outbox: Outbox) -> None:
        """Drive runs recorded in ``store`` by sending messages through ``transport``."""
        self.store = store
        self.registry = registry
        self.tasks = tasks
        self.transport = transport
        self.outbox = outbox
        self._assembled: dict[str, Saga] = {}

    # -- which definition a run follows ---------------------------------------------------

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
            raw = self.store.definition_json(saga_id)
            if not raw:
                return self.registry.get(name)
            saga = saga_from_json(codec.loads(raw), self.tasks)
            if len(self._assembled) > _ASSEMBLED_CACHE:
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

    def saga_of(self, saga_id: str) -> Saga:
        """The definition a recorded run follows.

        Raises:
            SagaNotFoundError: No such run is recorded.
            UnknownSagaError: Its saga is not registered with this engine.
        """
        name = self.store.name_of(saga_id)
        if not name:
            raise SagaNotFoundError(f"no saga {saga_id!r} is recorded")
        return self.definition_of(name, saga_id)

    def load(self, saga_id: str) -> SagaRun:
        """The run as recorded, its operations named by their tasks.

        Raises:
            SagaNotFoundError: No such run is recorded (never was, or expired).
        """
        return self.store.load(saga_id, task_names=lambda name: self._task_names(name, saga_id))

    def _task_names(self, name: str, saga_id: str) -> dict[str, tuple[str, str | None]]:
        try:
            saga = self.definition_of(name, saga_id)
        except (UnknownSagaError, DefinitionError):
            return {}
        names = {s.name: (s.action.name, s.compensation.name if s.compensation else None)
                 for s in saga.steps}
        for s in saga.steps:
            if s.fallback is not None:
                undo = s.fallback.compensation
                names[f"{s.name}:fallback"] = (s.fallback.action.name,
                                               undo.name if undo else None)
        return names

    # -- forward --------------------------------------------------------------------------

    def launch(self, definition: Saga, saga_id: str, values: dict[str, Any], cid: str,
               causation_id: str | None, parent: tuple[str, str] | None,
               idempotency_key: str | None = None) -> Creation:
        """Record a run and send its first messages, unless its id or key is taken.

        Returns what the store answered: a run created (and sent), or the run an
        ``idempotency_key`` started before (nothing is sent then).

        Raises:
            EnqueueError: The transport refused the first message; the run is recorded
                failed.
        """
        deadline_at = None
        if definition.deadline is not None:
            deadline_at = time.time() + definition.deadline.total_seconds()
        recorded = None
        if getattr(definition, "assembled", False):
            recorded = codec.dumps(saga_to_json(definition))
        trace = telemetry.TraceContext.new()
        creation = self.store.create(
            saga_id, name=definition.name, correlation_id=cid, causation_id=causation_id,
            inputs=values, plan=[s.name for s in definition.steps], deadline_at=deadline_at,
            parent=parent, definition=recorded, trace=trace, idempotency_key=idempotency_key,
        )
        if not creation.created:
            return creation
        try:
            self.forward(definition, saga_id, 0, headers_for(saga_id, cid, trace.traceparent))
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
        return creation

    def forward(self, saga: Saga, saga_id: str, start_at: int,
                headers: Mapping[str, str] | None = None) -> None:
        """Send the forward path from element ``start_at``.

        A step: the chain of steps up to the next group. A group: the branches it may
        start (the others start as these complete). Past the last element: complete the
        saga. ``headers`` default to the recorded run's.
        """
        if start_at >= len(saga.elements):
            self.finish(saga, saga_id)
            return
        element = saga.elements[start_at]
        if isinstance(element, Parallel):
            self.send(saga, saga_id, self.store.open_group(saga_id, group_spec(element)),
                      Role.ACTION, headers=headers)
            return
        self.transport.send_chain(saga, saga_id, [s.name for s in saga.segment(start_at)],
                                  self._headers(saga_id, headers))

    def send(self, saga: Saga, saga_id: str, steps: Sequence[str], role: Role, *,
             undoes_fallback: bool = False, headers: Mapping[str, str] | None = None,
             countdown: float | None = None) -> None:
        """Send one message per step for ``role`` (branches, a fallback, compensations)."""
        if steps:
            self.transport.send(saga, saga_id, steps, role, undoes_fallback=undoes_fallback,
                                headers=self._headers(saga_id, headers), countdown=countdown)

    def resend(self, saga: Saga, saga_id: str, step: str, *,
               countdown: float | None = None) -> None:
        """Send a step's action again, and what follows it as its first message would.

        A group's branch goes alone; any other step with the chain of steps after it (up
        to the next group). With ``countdown``, it runs no sooner than that.
        """
        if saga.group_of(step) is not None:
            self.send(saga, saga_id, [step], Role.ACTION, countdown=countdown)
            return
        segment = [s.name for s in saga.segment(saga.element_index(step))]
        self.transport.send_chain(saga, saga_id, segment, self._headers(saga_id, None),
                                  countdown=countdown)

    def open_group(self, saga: Saga, saga_id: str, group: Parallel) -> None:
        """Send a group's branches again: those in flight and those its bound allows."""
        branches = self.store.open_group(saga_id, group_spec(group), force=True)
        self.send(saga, saga_id, branches, Role.ACTION)

    def finish(self, saga: Saga, saga_id: str) -> bool:
        """Complete a saga whose every element completed, with its result.

        Returns ``False`` when it was not running (another caller finished it).
        """
        results = self.store.results(saga_id, saga.results_for_return())
        inputs = self.store.inputs(saga_id)
        return self.store.finish(saga_id, saga.build_result(inputs, results))

    def _headers(self, saga_id: str, headers: Mapping[str, str] | None) -> Mapping[str, str]:
        """The headers given, or the recorded run's (one read of its record)."""
        if headers is None:
            return headers_for(saga_id, *self.store.correlation_of(saga_id))
        return headers

    # -- failing and rolling back ---------------------------------------------------------

    def step_failed(self, envelope: Envelope, exc: BaseException) -> None:
        """An action failed for good: fail the saga once and start its rollback.

        An action recorded completed did not fail: what failed came after it (sending the
        next message, with the broker down). The saga still runs and the recovery sweep
        drives it on after the hand-off time; it is not rolled back.
        """
        done = self.store.operation_status(envelope.saga_id, envelope.role.value,
                                           envelope.step) == "completed"
        if done:
            if self.store.status(envelope.saga_id) is SagaStatus.RUNNING:
                log.warning("[saga %s] %s completed, but what follows could not be sent (%s); "
                            "the recovery sweep drives the saga on", envelope.saga_id,
                            envelope.step, exc)
            return
        saga = self.definition_of(envelope.saga, envelope.saga_id)
        error = describe_error(exc, step=envelope.step)
        rollback = self.fail(saga, envelope.saga_id, envelope.step, error)
        if rollback is None:
            if self.store.status(envelope.saga_id) is SagaStatus.NEEDS_ATTENTION:
                log.error("[saga %s] %s gave up after the saga's pivot: it needs an operator",
                          envelope.saga_id, envelope.step)
            return
        log.warning("[saga %s] %s failed at %s (%s); compensating %s", envelope.saga_id,
                    saga.name, envelope.step, error["message"],
                    ", ".join(rollback.plan) or "nothing")

    def fail(self, saga: Saga, saga_id: str, step: str, error: dict[str, Any]
             ) -> Rollback | None:
        """Turn a running saga compensating because ``step`` failed, and start the undo.

        Returns the rollback planned, or ``None`` when the saga was not running (another
        failure turned it first) or passed a pivot (then it needs an operator).
        """
        rollback = self.store.fail_saga(saga_id, failed_step=step, error=error,
                                        table=saga.rollback_table())
        if rollback is not None:
            self.start_rollback(saga_id, rollback)
        return rollback

    def compensation_failed(self, envelope: Envelope, exc: BaseException) -> None:
        """A compensation failed for good: record it, and go on with the others."""
        self.store.fail(envelope.saga_id, Role.COMPENSATION, envelope.step, attempt=0,
                        error=describe_error(exc, step=envelope.step), retry_in_s=None)
        log.error("[saga %s] compensation of %s failed (%s); going on with the rest",
                  envelope.saga_id, envelope.step, exc)
        self.continue_rollback(envelope.saga_id)

    def start_rollback(self, saga_id: str, rollback: Rollback) -> None:
        """Enqueue a rollback just planned (its first stage), unless it awaits an action."""
        if rollback.plan:
            self.continue_rollback(saga_id)

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
        headers = self._headers(saga_id, None)
        for step, undoes_fallback in due:
            self.send(saga, saga_id, [step], Role.COMPENSATION, undoes_fallback=undoes_fallback,
                      headers=headers)

    def revoke_forward(self, saga: Saga, saga_id: str) -> None:
        """Take back the forward messages a stopped saga may still have queued.

        Those of every step after the last one that started, and, when that one is a
        branch, of its group's other branches too (they may still be queued).
        """
        cursor = self.store.cursor(saga_id)
        start_at = cursor + 1
        if 0 <= cursor < len(saga.steps):
            group = saga.group_of(saga.steps[cursor].name)
            if group is not None:
                start_at = min(saga.index_of(b) for b in group.branch_names())
        queued = forward_task_ids(saga, saga_id, start_at=start_at)
        if queued:
            self.transport.revoke(queued)
