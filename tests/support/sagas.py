"""Sagas that exist only for the engine's tests, built from ``steps``."""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel

from sagaline import NO_RETRY, Const, FromInput, RetryPolicy, Saga, Step

from .steps import chatty, fail, fail_undo, sleep, slow_undo, succeed, undo, work


class Tagged(BaseModel):
    """Every test saga takes a tag, under which its operations note their calls."""

    tag: str


TAG = {"tag": FromInput("tag")}

undo_fails = Saga(
    "t_undo_fails",
    inputs=Tagged,
    steps=[
        Step("first", succeed, compensation=undo, args=TAG),
        Step("second", succeed, compensation=fail_undo, args=TAG,
             compensation_retry=RetryPolicy(attempts=2, initial=timedelta(milliseconds=50))),
        Step("third", succeed, args=TAG),
        Step("fourth", fail, args=TAG, retry=NO_RETRY),
    ],
)

too_slow = Saga(
    "t_too_slow",
    inputs=Tagged,
    steps=[
        Step("first", succeed, compensation=undo, args=TAG),
        Step("slow", sleep, compensation=undo, args={**TAG, "seconds": Const(5)},
             time_limit=timedelta(seconds=1), retry=NO_RETRY),
    ],
)

slow_start = Saga(
    "t_slow_start",
    inputs=Tagged,
    steps=[
        Step("slow", sleep, args={**TAG, "seconds": Const(1.5)}),
        Step("after", succeed, args=TAG),
    ],
)

cancellable = Saga(
    "t_cancellable",
    inputs=Tagged,
    steps=[
        Step("first", succeed, compensation=undo, args=TAG),
        Step("long", work, compensation=undo, args={**TAG, "seconds": Const(10)}),
        Step("after", succeed, compensation=undo, args=TAG),
    ],
)

not_cooperative = Saga(
    "t_not_cooperative",
    inputs=Tagged,
    steps=[
        Step("first", succeed, compensation=undo, args=TAG),
        Step("slow", sleep, compensation=undo, args={**TAG, "seconds": Const(1.5)}),
        Step("after", succeed, compensation=undo, args=TAG),
    ],
)

slow_rollback = Saga(
    "t_slow_rollback",
    inputs=Tagged,
    steps=[
        Step("first", succeed, compensation=slow_undo, args=TAG,
             compensation_args={**TAG, "seconds": Const(3)}),
        Step("second", fail, args=TAG, retry=NO_RETRY),
    ],
)

with_deadline = Saga(
    "t_with_deadline",
    inputs=Tagged,
    deadline=timedelta(seconds=1),
    steps=[
        Step("first", succeed, compensation=undo, args=TAG),
        Step("slow", sleep, compensation=undo, args={**TAG, "seconds": Const(3)}),
        Step("after", succeed, compensation=undo, args=TAG),
    ],
)

long_step = Saga(
    "t_long_step",
    inputs=Tagged,
    steps=[Step("long", sleep, args={**TAG, "seconds": Const(5)})],
)

quick = Saga("t_quick", inputs=Tagged, steps=[Step("only", succeed, args=TAG)])

#: Its steps run on two queues, so two workers share each run (telemetry across processes).
across = Saga(
    "t_across",
    inputs=Tagged,
    steps=[
        Step("here", chatty, compensation=undo, args=TAG, queue="tele-a"),
        Step("there", succeed, compensation=undo, args=TAG, queue="tele-b",
             retry=RetryPolicy(attempts=2, initial=timedelta(milliseconds=50))),
        Step("back", succeed, args=TAG, queue="tele-a", retry=NO_RETRY),
    ],
)

TEST_SAGAS = [quick, across, long_step, undo_fails, too_slow, slow_start, cancellable,
              not_cooperative, slow_rollback, with_deadline]
