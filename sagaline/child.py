"""Nested sagas: a step that runs a child saga, and waits for it without holding a worker."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from sagaline.context import StepContext
from sagaline.errors import StateError
from sagaline.refs import Ref
from sagaline.saga import Saga
from sagaline.step import Step
from sagaline.task import saga_task

_CHILD_IDS = uuid.UUID("6f1c2b8e-5d0a-4c1e-9f3b-2a7d8e4c6b10")


@saga_task("sagaline.run_child")
def run_child(ctx: StepContext, **inputs: Any) -> None:
    """Stands for starting a child saga; the engine does that itself, never this function."""
    raise StateError(f"step {ctx.step} runs a child saga; only the engine starts it")


@saga_task("sagaline.undo_child")
def undo_child(ctx: StepContext) -> None:
    """Stands for rolling a child saga back; the engine does that itself."""
    raise StateError(f"step {ctx.step} undoes a child saga; only the engine does that")


class SubSaga(Step):
    """A step that runs a child saga: its result is the child's result.

    The parent does not wait inside a task: the step records the child's id and returns
    the worker; the child's end continues the parent (or fails the step, when the child
    did not complete). Compensating the step rolls back the child, if it completed, and
    the parent's rollback goes on once the child's has ended.

    Example:
        >>> SubSaga("ship", shipping, inputs={"order_id": FromStep("create_order", "id")})
    """

    child: Saga
    """The saga the step runs."""

    def __init__(self, name: str, saga: Saga, *, inputs: Mapping[str, Ref],
                 time_limit: timedelta | None = None, queue: str | None = None) -> None:
        """Declare a step that runs ``saga`` with ``inputs`` (references, as a step's args).

        ``time_limit`` bounds starting the child (or its rollback), not the child's run.
        """
        super().__init__(name, run_child, compensation=undo_child, args=inputs,
                         compensation_args={}, time_limit=time_limit, queue=queue)
        object.__setattr__(self, "child", saga)


def child_id_of(parent_id: str, step: str) -> str:
    """The id of the child saga a parent's step runs: the same for every delivery."""
    return str(uuid.uuid5(_CHILD_IDS, f"{parent_id}:{step}"))
