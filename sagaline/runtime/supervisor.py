"""Supervision: cancel, resume and recover sagas, as Thunderline's saga Supervisor does.

The recovery sweep (run by Celery beat, and by ``sagaline recover``) looks only at sagas
whose attention time has passed (``index:active``) or whose deadline has, so its cost grows
with the sagas that need it, not with every saga ever run. For each:

1. Past its deadline: stop it like a cancel, but it ends ``compensated``, its error a
   :class:`DeadlineExceededError`.
2. Claim the look atomically (two sweepers never drive the same saga); a saga whose running
   attempt still renews its lease is left alone.
3. Running: find the first element not completed. A step: re-enqueue the forward path
   from it (its fallback, when its action gave up and the fallback was due). A group:
   re-send its branches in flight and start those its bound allows; every element
   completed: complete the saga. Claims make a duplicate harmless. If a step failed for
   good but the errback was lost, or the saga was recovered too often without progress,
   fail it and compensate (or mark it for an operator, past a pivot).
4. Compensating: re-enqueue the compensations of the rollback's current stage; an awaited
   action whose worker was lost makes its compensation due; a compensation recovered too
   often is marked failed (and dead-lettered) so the others go on.
5. Publish the events of every saga whose outbox still holds entries (the bus was down).

A saga in a final state is never driven again; recoveries of one saga are spaced out
exponentially and capped, so a dead saga is never picked up forever.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime

from pydantic import BaseModel

from sagaline.child import SubSaga, child_id_of
from sagaline.errors import (
    DeadlineExceededError,
    RecoveryExhaustedError,
    SagaCancelledError,
    SagaNotFoundError,
    StateError,
    UnknownSagaError,
    describe_error,
)
from sagaline.events.outbox import Outbox
from sagaline.outcome import DeadLetter, OperationRun, SagaRun, StepRun
from sagaline.runtime.driver import Driver
from sagaline.runtime.nested import NestedSagas
from sagaline.saga import Saga
from sagaline.status import Role, SagaStatus, StepStatus
from sagaline.store.redis import RedisStore

log = logging.getLogger("sagaline.supervisor")


class StuckSaga(BaseModel):
    """A saga past its attention time or deadline: what ``sagaline stuck`` lists."""

    saga_id: str
    """The run."""
    name: str
    """The saga's name."""
    status: SagaStatus
    """Running or compensating."""
    waiting_on: str | None
    """The operation it waits on, if any."""
    overdue_s: float
    """Seconds past its attention time (or deadline)."""
    deadline_at: datetime | None
    """Its deadline, if any."""
    recoveries: int
    """How often it was recovered since its last progress."""


class Supervisor:
    """Operations on running sagas; reached as ``engine.supervisor``.

    Args:
        store: Where runs are recorded.
        driver: Drives runs on and rolls them back.
        nested: Settles child sagas whose end was not delivered.
        outbox: Publishes what a sweep logged, and what a failed publish left.
        max_recoveries: How often one saga is driven on without progress before the
            operation it waits on is failed.
    """

    def __init__(self, store: RedisStore, driver: Driver, nested: NestedSagas, outbox: Outbox,
                 *, max_recoveries: int) -> None:
        """Supervise the sagas recorded in ``store``."""
        self.store = store
        self.driver = driver
        self.nested = nested
        self.outbox = outbox
        self.max_recoveries = max_recoveries

    # -- asking ---------------------------------------------------------------------------

    def list_active(self) -> list[SagaRun]:
        """Every saga not yet final (running or compensating)."""
        return self._runs(self.store.active_ids())

    def stuck(self) -> list[StuckSaga]:
        """Sagas past their attention time or deadline, or ``needs_attention``.

        Most overdue first; a saga waiting for an operator counts from when it stopped.
        """
        store = self.store
        now = datetime.now(UTC)
        attention = store.list_ids(SagaStatus.NEEDS_ATTENTION, limit=1000)
        ids = list(dict.fromkeys([*store.past_deadline(1000), *store.due(1000), *attention]))
        stuck = []
        for run in self._runs(ids):
            due = store.attention_at(run.saga_id)
            since = run.deadline_at if run.deadline_at and run.deadline_at < now else None
            if run.status is SagaStatus.NEEDS_ATTENTION:
                since = run.ended_at or run.created_at
            reference = since or (datetime.fromtimestamp(due, UTC) if due else now)
            stuck.append(StuckSaga(
                saga_id=run.saga_id, name=run.name, status=run.status,
                waiting_on=run.waiting_on, overdue_s=(now - reference).total_seconds(),
                deadline_at=run.deadline_at, recoveries=run.recoveries,
            ))
        return sorted(stuck, key=lambda s: -s.overdue_s)

    def dead_letters(self) -> list[DeadLetter]:
        """Compensations that gave up, oldest first."""
        return self.store.dead_letters()

    # -- stopping -------------------------------------------------------------------------

    def cancel(self, saga_id: str, reason: str = "cancelled by request") -> SagaStatus:
        """Cancel a running saga.

        No new step starts, a queued step is revoked, a running one is asked to stop, and
        every completed step is compensated in reverse. A saga that is already final (or
        compensating) is left as it is.

        Returns:
            The saga's status after the request (``cancelled`` at once when nothing needs
            undoing; ``compensating`` while the undo runs).

        Raises:
            SagaNotFoundError: No such saga is recorded.
        """
        error = describe_error(SagaCancelledError(reason, saga_id=saga_id), step=None)
        try:
            self._abort(saga_id, "cancelled", error)
        finally:
            self.nested.drain()
        status = self.store.status(saga_id)
        if status is None:
            raise SagaNotFoundError(f"no saga {saga_id!r} is recorded")
        return status

    def stop(self, correlation_id: str, reason: str = "stopped by correlation id"
             ) -> dict[str, SagaStatus]:
        """Cancel every unfinished saga of one business flow; their statuses after."""
        return {
            saga_id: self.cancel(saga_id, reason)
            for saga_id in self.store.ids_for_correlation(correlation_id)
            if self.store.status(saga_id) in (SagaStatus.RUNNING,)
        }

    # -- driving on -------------------------------------------------------------------------

    def recover(self, limit: int = 100) -> dict[str, int]:
        """One sweep: stop sagas past their deadline, drive on the others that are due.

        Returns how many sagas had each outcome.
        """
        counts: Counter[str] = Counter()
        store = self.store
        self.nested.drain()
        for saga_id in store.past_deadline(limit):
            error = describe_error(DeadlineExceededError("the saga ran past its deadline",
                                                         saga_id=saga_id), step="")
            try:
                if self._abort(saga_id, "deadline", error) is None:
                    store.forget_deadline(saga_id)
                counts["deadline"] += 1
            except UnknownSagaError as unknown:
                counts[self._unknown(saga_id, unknown)] += 1
        for saga_id in store.due(limit):
            try:
                counts[self._recover_one(saga_id)] += 1
            except UnknownSagaError as unknown:
                counts[self._unknown(saga_id, unknown)] += 1
            self.outbox.flush(saga_id)
        self.nested.drain()
        published = self.outbox.sweep(limit)
        if published:
            counts["events_published"] = published
        pruned = store.prune_indexes()
        if pruned:
            counts["pruned"] = pruned
        if counts:
            log.info("recovery sweep: %s", dict(counts))
        return dict(counts)

    def _unknown(self, saga_id: str, error: UnknownSagaError) -> str:
        """A due saga whose definition this engine lacks: leave it for an engine that has it.

        One such saga must not stop the sweep for all the others (a deployment may run
        several apps on one Redis, or an old saga may outlive its definition).
        """
        log.error("[saga %s] cannot be recovered here: %s", saga_id, error)
        # Look again later rather than at every sweep.
        self.store.look_later(saga_id)
        return "unknown_saga"

    def resume(self, saga_id: str) -> str:
        """Drive one unfinished saga on now, whatever its attention time says.

        A ``needs_attention`` saga (a step after its pivot gave up), once an operator fixed
        the cause, runs again from the steps that failed. Their attempts are kept, so each
        gets one more attempt, not a new round of retries; resume again if it gives up.
        """
        store = self.store
        try:
            if store.retry_forward(saga_id):
                log.warning("[saga %s] resumed past its pivot by an operator", saga_id)
                run = self.driver.load(saga_id)
                return self._drive_forward(run, self.driver.definition_of(run.name, saga_id),
                                           exhausted=False)
            if not store.look_now(saga_id):
                status = store.status(saga_id)
                if status is None:
                    raise SagaNotFoundError(f"no saga {saga_id!r} is recorded")
                return f"not resumed: it is {status.value}"
            return self._recover_one(saga_id)
        finally:
            self.nested.drain()
            self.outbox.flush_soon(saga_id)

    def retry_compensation(self, saga_id: str) -> list[str]:
        """Undo what a ``compensation_failed`` saga left, once an operator fixed the cause.

        Only the compensations that failed run again; the saga ends ``compensated`` (or
        ``cancelled``) when they succeed. Returns the compensations retried.

        Raises:
            StateError: The saga is not ``compensation_failed``.
        """
        rollback = self.store.reopen(saga_id)
        if rollback is None:
            status = self.store.status(saga_id)
            raise StateError(
                f"saga {saga_id} is {status.value if status else 'not recorded'}; only a "
                "compensation_failed saga can retry its compensations"
            )
        self.driver.continue_rollback(saga_id)
        return rollback.plan

    # -- inside ---------------------------------------------------------------------------

    def _runs(self, ids: list[str]) -> list[SagaRun]:
        runs = []
        for saga_id in ids:
            try:
                runs.append(self.driver.load(saga_id))
            except SagaNotFoundError:
                continue
        return runs

    def _abort(self, saga_id: str, reason: str, error: Mapping[str, object]
               ) -> list[str] | None:
        """Stop a running saga and start its rollback; its plan, or ``None`` if not running.

        The caller drains the children that ended (:meth:`NestedSagas.drain`).
        """
        saga = self.driver.saga_of(saga_id)
        rollback = self.store.abort(saga_id, reason=reason, error=dict(error),
                                    table=saga.rollback_table())
        if rollback is None:
            return None
        self.driver.revoke_forward(saga, saga_id)
        log.warning("[saga %s] %s: %s; compensating %s", saga_id, reason, error["message"],
                    ", ".join(rollback.plan) or "nothing")
        try:
            self.driver.start_rollback(saga_id, rollback)
            for step in saga.steps:
                # A child saga still running is stopped too; its end settles the parent's
                # step.
                if isinstance(step, SubSaga):
                    child_id = child_id_of(saga_id, step.name)
                    if self.store.status(child_id) is SagaStatus.RUNNING:
                        self._abort(child_id, reason, error)
        finally:
            self.outbox.flush(saga_id)
        return rollback.plan

    def _recover_one(self, saga_id: str) -> str:
        reply = self.store.claim_recovery(saga_id, self.max_recoveries)
        if reply[0] != "recover":
            return reply[0]
        exhausted = reply[3] == "1"
        try:
            run = self.driver.load(saga_id)
        except SagaNotFoundError:
            return "missing"
        saga = self.driver.definition_of(run.name, saga_id)
        log.warning("[saga %s] recovering %s (%s, recovery %s)", saga_id, run.name,
                    run.status.value, reply[2])
        if run.status is SagaStatus.RUNNING:
            return self._drive_forward(run, saga, exhausted)
        return self._drive_rollback(run, exhausted)

    def _drive_forward(self, run: SagaRun, saga: Saga, exhausted: bool) -> str:
        pending = next((s for s in run.steps if not _done(s)), None)
        if pending is None:
            self.driver.finish(saga, run.saga_id)
            return "finished"
        group = saga.group_of(pending.name)
        if group is not None:
            records = [run.step(b) for b in group.branch_names()]
            pending = next((b for b in records if b.status is StepStatus.FAILED), pending)
        fallback = pending.fallback
        if fallback is not None and fallback.status is not StepStatus.PENDING:
            pending = pending.model_copy(update=fallback.model_dump())
        if pending.status is StepStatus.WAITING and pending.signal:
            # It waits for a signal: past its deadline, run it once more (it fails if it
            # still waits); before, leave it (a group's other branches are sent below).
            if pending.wait_until is not None and pending.wait_until <= datetime.now(UTC):
                self.driver.resend(saga, run.saga_id, pending.name)
                return "signal_timeout"
            if group is None:
                return "waiting_signal"
        elif pending.status is StepStatus.WAITING:
            return self._check_child(run.saga_id, pending.name, pending.child)
        if pending.status is not StepStatus.FAILED and not exhausted:
            position = saga.element_index(pending.name)
            if group is not None:
                self.driver.open_group(saga, run.saga_id, group)
            elif fallback is not None and fallback.status is not StepStatus.PENDING:
                self.driver.send(saga, run.saga_id, [pending.name], Role.FALLBACK)
            else:
                self.driver.forward(saga, run.saga_id, position)
            return "resumed"
        return self._fail_stuck(run, saga, pending, fallback)

    def _fail_stuck(self, run: SagaRun, saga: Saga, pending: StepRun,
                    fallback: OperationRun | None) -> str:
        """Fail the operation a saga made no progress on, and the saga with it."""
        error = describe_error(RecoveryExhaustedError(
            f"{pending.name} made no progress after {self.max_recoveries} recoveries",
            saga_id=run.saga_id, step=pending.name), step=pending.name)
        if pending.status is not StepStatus.FAILED:
            role = Role.FALLBACK if fallback and fallback.status is not StepStatus.PENDING \
                else Role.ACTION
            self.store.fail(run.saga_id, role, pending.name, attempt=0, error=error,
                            retry_in_s=None)
        self.driver.fail(saga, run.saga_id, pending.name, error)
        return "failed"

    def _check_child(self, saga_id: str, step: str, child_id: str | None) -> str:
        """A step waits for its child saga: deliver the child's end if it was lost."""
        store = self.store
        if child_id is None or store.status(child_id) is None:
            error = describe_error(RecoveryExhaustedError(
                f"{step} waits for a child saga that is not recorded", saga_id=saga_id,
                step=step), step=step)
            outcome = store.child_ended(saga_id, step, child_status="failed", result=None,
                                        error=error)
            self.nested.follow_outcome(self.driver.saga_of(saga_id), saga_id, step,
                                         outcome, error)
            return "child_missing"
        return f"child_{self.nested.deliver_end(child_id)}"

    def _drive_rollback(self, run: SagaRun, exhausted: bool) -> str:
        store = self.store
        for step in run.steps:
            undo = step.compensation
            if undo is not None and undo.status is StepStatus.WAITING and undo.child:
                self.nested.deliver_end(undo.child)
            if step.status is StepStatus.WAITING and step.child:
                self.nested.deliver_end(step.child)
        # An action waiting for its child saga is not lost: the child's end settles it.
        awaited = [s.name for s in run.steps if s.status is not StepStatus.WAITING
                   and s.compensation and s.compensation.status is StepStatus.AWAITING]
        for name in awaited:
            store.release_awaited(run.saga_id, name)
        if exhausted and not awaited:
            left, _ = store.compensations_left(run.saga_id)
            if left:
                error = describe_error(RecoveryExhaustedError(
                    f"compensation of {left[0]} made no progress after "
                    f"{self.max_recoveries} recoveries", saga_id=run.saga_id,
                    step=left[0]), step=left[0])
                store.fail(run.saga_id, Role.COMPENSATION, left[0], attempt=0, error=error,
                           retry_in_s=None)
        self.driver.continue_rollback(run.saga_id, force=True)
        return "rollback_resumed"


def _done(step: StepRun) -> bool:
    """Whether a step completed, by its action or by its fallback."""
    if step.status is StepStatus.COMPLETED:
        return True
    return step.fallback is not None and step.fallback.status is StepStatus.COMPLETED
