"""Nested sagas: a step that runs a child saga, waits for its end, and undoes it.

A :class:`~sagaline.SubSaga` step does not run a function: its attempt records that it
waits for the child (holding no worker and no lease) and starts the child. When the child
ends, ``conclude`` (Lua) lists it in ``children_done``; whoever drains that list
(:meth:`NestedSagas.drain`, after every delivery that may have ended a child, and at every
sweep) completes or fails the parent's step and drives the parent on. The step's
compensation rolls the child back the same way, and the parent's rollback goes on when the
child's ends.
"""

from __future__ import annotations

import logging
from typing import Any

from sagaline import codec
from sagaline.errors import SagaError, SagaNotFoundError, StepError, describe_error
from sagaline.runtime.driver import Driver
from sagaline.saga import Saga
from sagaline.status import FINAL_STATUSES, SagaStatus
from sagaline.store.redis import RedisStore

log = logging.getLogger("sagaline.nested")


class NestedSagas:
    """Starts, undoes and settles child sagas, on top of the driver."""

    def __init__(self, store: RedisStore, driver: Driver) -> None:
        """Settle the child sagas recorded in ``store``, driving parents with ``driver``."""
        self.store = store
        self.driver = driver

    def start(self, saga: Saga, inputs: dict[str, Any], child_id: str, *,
              parent: tuple[str, str], correlation_id: str,
              causation_id: str | None = None) -> None:
        """Start a parent step's child saga, once (a second call finds it recorded).

        ``causation_id`` is the parent step's ``saga.step.started`` event, so the child's
        ``saga.started`` names it as its cause.
        """
        if self.driver.launch(saga, child_id, inputs, correlation_id,
                              causation_id or parent[0], parent).created:
            log.info("[saga %s] %s started as the child of %s step %s", child_id, saga.name,
                     *parent)

    def undo(self, saga: Saga, child_id: str) -> None:
        """Roll back a completed child saga, for its parent's compensation.

        A child with nothing to undo, or rolled back already, is listed as ended again
        (``undo_completed.lua``), so its end continues the parent's rollback.
        """
        error = describe_error(
            SagaError("its parent saga is compensating the step that ran it"), step=None)
        if self.store.undo_completed(child_id, table=saga.rollback_table(), error=error):
            self.driver.continue_rollback(child_id)

    def drain(self) -> None:
        """Deliver the ends of child sagas to their parents, and drive the parents on."""
        while (child_id := self.store.next_child_done()) is not None:
            try:
                self.deliver_end(child_id)
            except SagaNotFoundError:
                log.warning("[saga %s] ended, but its parent is not recorded", child_id)

    def deliver_end(self, child_id: str) -> str:
        """Tell a final child saga's parent step how the child ended; drive the parent on.

        Returns what the parent's record said (``completed``, ``failed``, ``late``,
        ``undone`` or ``stale``; ``running`` when the child has not ended).
        """
        child = self.store.record(child_id)
        status = child.get("status", "")
        if not status or SagaStatus(status) not in FINAL_STATUSES:
            return "running"
        parent_id, step = child.get("parent_id", ""), child.get("parent_step", "")
        parent = self.driver.saga_of(parent_id)
        error = describe_error(StepError(
            f"child saga {child.get('name')} ({child_id}) ended {status}",
            saga_id=parent_id, step=step,
            details={"child_id": child_id, "child_error": codec.loads(child.get("error")) or {}},
        ), step=step, retryable=False)
        outcome = self.store.child_ended(parent_id, step, child_status=status,
                                         result=codec.loads(child.get("result")), error=error)
        self.follow_outcome(parent, parent_id, step, outcome, error)
        return outcome

    def follow_outcome(self, parent: Saga, parent_id: str, step: str, outcome: str,
                       error: dict[str, Any]) -> None:
        """Drive a parent on after its step's child ended (``child.lua``'s answer)."""
        if outcome == "completed":
            self.driver.forward(parent, parent_id, parent.element_index(step) + 1)
        elif outcome == "failed":
            self.driver.fail(parent, parent_id, step, error)
        elif outcome in ("late", "undone"):
            self.driver.continue_rollback(parent_id)
