"""The benchmark's tasks: the project's app and engine, the bench sagas, the raw tasks.

The worker runs ``celery -A bench_app worker`` from this folder; the benchmark imports the
same module, so both sides know every task. ``SAGALINE_DATA_DIR`` (or
``SAGALINE_REDIS_URL``) must be set before this module is imported.
"""

from __future__ import annotations

from typing import Any

from celery import chain
from pydantic import BaseModel

from config import app, engine
from sagaline import NO_RETRY, NonRetryableError, Saga, Step, StepContext, saga_task

#: The step whose task fails in the failure cases (1-based, as in "fails at step 4").
FAILING_STEP = 4
#: The number of steps of every bench saga and raw chain.
STEPS = 5
#: The number of steps before the failing one, each with a compensation.
COMPENSATED = FAILING_STEP - 1


# -- the sagas ------------------------------------------------------------------------------


class BenchInput(BaseModel):
    """The bench sagas' inputs: nothing that matters."""

    n: int = 0


@saga_task("bench.noop")
def noop(ctx: StepContext) -> dict[str, Any]:
    """A step that does nothing."""
    return {}


@saga_task("bench.noop_undo")
def noop_undo(ctx: StepContext) -> dict[str, Any]:
    """A compensation that does nothing."""
    return {}


@saga_task("bench.fail")
def fail(ctx: StepContext) -> dict[str, Any]:
    """A step that fails for good."""
    raise NonRetryableError("boom")


def _steps(failing: bool) -> list[Step]:
    steps = []
    for number in range(1, STEPS + 1):
        fails = failing and number == FAILING_STEP
        steps.append(
            Step(
                f"s{number}",
                fail if fails else noop,
                compensation=noop_undo if number <= COMPENSATED else None,
                retry=NO_RETRY if fails else None,
            )
        )
    return steps


saga_ok = engine.register(Saga("bench_ok", inputs=BenchInput, steps=_steps(failing=False)))
saga_fail = engine.register(Saga("bench_fail", inputs=BenchInput, steps=_steps(failing=True)))


# -- the raw Celery baseline ----------------------------------------------------------------


def undo_id(root_id: str) -> str:
    """The task id of the last compensation of a raw chain, derived from its root id."""
    return f"{root_id}-undo"


@app.task(name="bench.raw_noop")  # type: ignore[untyped-decorator]
def raw_noop() -> dict[str, Any]:
    """A raw task that does nothing."""
    return {}


@app.task(name="bench.raw_undo")  # type: ignore[untyped-decorator]
def raw_undo() -> dict[str, Any]:
    """A raw compensation that does nothing."""
    return {}


@app.task(name="bench.raw_fail")  # type: ignore[untyped-decorator]
def raw_fail() -> dict[str, Any]:
    """A raw task that fails."""
    raise RuntimeError("boom")


@app.task(name="bench.raw_errback")  # type: ignore[untyped-decorator]
def raw_errback(request: Any, exc: BaseException, traceback: Any) -> None:
    """The raw chain's errback (new style, so run inline): enqueue the compensations."""
    undo = [raw_undo.si() for _ in range(COMPENSATED)]
    undo[-1].set(task_id=undo_id(request.root_id))
    chain(*undo).apply_async()


def raw_chain(failing: bool) -> Any:
    """The raw chain: five no-op tasks, or five whose fourth fails, with an errback."""
    tasks = [
        (raw_fail if failing and number == FAILING_STEP else raw_noop).si()
        for number in range(1, STEPS + 1)
    ]
    if not failing:
        return chain(*tasks)
    return chain(*tasks).on_error(raw_errback.s())


__all__ = [
    "app", "engine", "raw_chain", "saga_fail", "saga_ok", "undo_id",
]
