"""Sagas that exist only for the engine's tests, built from ``steps``."""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel

from sagaline import (
    NO_RETRY,
    Const,
    Fallback,
    FromInput,
    FromStep,
    Parallel,
    RetryPolicy,
    Saga,
    Step,
    SubSaga,
)

from .steps import (
    backup,
    chatty,
    die,
    echo,
    fail,
    fail_undo,
    flaky,
    held_undo,
    outgoing_headers,
    plan_steps,
    progressing,
    sleep,
    slow_undo,
    succeed,
    undo,
    undo_backup,
    work,
)


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

#: Rolled back: second's compensation completes, then first's holds until the test opens
#: the gate (``steps.gate_key``).
held_rollback = Saga(
    "t_held_rollback",
    inputs=Tagged,
    steps=[
        Step("first", succeed, compensation=held_undo, args=TAG,
             compensation_args={**TAG, "seconds": Const(30)}),
        Step("second", succeed, compensation=undo, args=TAG),
        Step("third", fail, args=TAG, retry=NO_RETRY),
    ],
)

def _poisoned(name: str, *, whole_worker: bool) -> Saga:
    """A saga whose second step kills what runs it on every attempt: the worker's pool
    process, or with ``whole_worker`` every process of the worker.
    """
    return Saga(name, inputs=Tagged, steps=[
        Step("first", succeed, compensation=undo, args=TAG),
        Step("poison", die, compensation=undo,
             args={**TAG, "whole_worker": Const(whole_worker)}),
    ])


poison = _poisoned("t_poison", whole_worker=False)
poison_worker = _poisoned("t_poison_worker", whole_worker=True)

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

with_headers = Saga(
    "t_headers",
    inputs=Tagged,
    steps=[Step("call_outside", outgoing_headers, args=TAG)],
)

fan_out = Saga(
    "t_fan_out",
    inputs=Tagged,
    steps=[
        Step("first", succeed, compensation=undo, args=TAG),
        Step("second", succeed, compensation=undo, args=TAG),
        Parallel("fan", [
            Step(f"b{i}", fail if i == 3 else succeed, compensation=undo, args=TAG,
                 retry=NO_RETRY)
            for i in range(1, 6)
        ]),
        Step("after", succeed, compensation=undo, args=TAG),
    ],
)

SLOW_UNDO = {**TAG, "seconds": Const(2)}

fan_out_slow_undo = Saga(
    "t_fan_out_slow_undo",
    inputs=Tagged,
    steps=[
        Step("first", succeed, compensation=undo, args=TAG),
        Parallel("fan", [
            Step("b1", succeed, compensation=slow_undo, args=TAG, compensation_args=SLOW_UNDO),
            Step("b2", succeed, compensation=slow_undo, args=TAG, compensation_args=SLOW_UNDO),
            Step("b3", succeed, compensation=slow_undo, args=TAG, compensation_args=SLOW_UNDO),
        ]),
        Step("last", fail, args=TAG, retry=NO_RETRY),
    ],
)

slow_branches = Saga(
    "t_slow_branches",
    inputs=Tagged,
    steps=[
        Step("first", succeed, compensation=undo, args=TAG),
        Parallel("fan", [
            Step("s1", sleep, compensation=undo, args={**TAG, "seconds": Const(1.5)},
                 compensation_args=TAG),
            Step("s2", sleep, compensation=undo, args={**TAG, "seconds": Const(1.5)},
                 compensation_args=TAG),
        ]),
        Step("after", succeed, compensation=undo, args=TAG),
    ],
)

bounded = Saga(
    "t_bounded",
    inputs=Tagged,
    steps=[
        Parallel("fan", [
            Step(f"p{i}", sleep, args={**TAG, "seconds": Const(2)}) for i in range(1, 6)
        ], max_concurrency=2),
        Step("use", echo, args={**TAG, "value": FromStep("p4", "slept")}),
    ],
    returns={"use": FromStep("use"), "p1": FromStep("p1")},
)

ends_in_group = Saga(
    "t_ends_in_group",
    inputs=Tagged,
    steps=[
        Step("first", succeed, compensation=undo, args=TAG),
        Parallel("fan", [Step("x", succeed, args=TAG), Step("y", succeed, args=TAG)]),
    ],
)

with_fallback = Saga(
    "t_with_fallback",
    inputs=Tagged,
    steps=[
        Step("first", succeed, compensation=undo, args=TAG),
        Step("pay", fail, compensation=undo, args=TAG, retry=NO_RETRY,
             fallback=Fallback(backup, compensation=undo_backup, args=TAG)),
        Step("later", echo, compensation=undo, args={**TAG, "value": FromStep("pay", "via")},
             retry=NO_RETRY),
    ],
)

with_pivot = Saga(
    "t_with_pivot",
    inputs=Tagged,
    steps=[
        Step("first", succeed, compensation=undo, args=TAG),
        Step("send_email", succeed, args=TAG, pivot=True),
        Step("after", succeed, compensation=undo, args=TAG,
             retry=RetryPolicy(attempts=3, initial=timedelta(milliseconds=50))),
    ],
)

child = Saga(
    "t_child",
    inputs=Tagged,
    steps=[
        Step("c1", succeed, compensation=undo, args=TAG),
        Step("c2", succeed, compensation=undo, args=TAG, retry=NO_RETRY),
    ],
)

parent = Saga(
    "t_parent",
    inputs=Tagged,
    steps=[
        Step("p1", succeed, compensation=undo, args=TAG),
        SubSaga("child", child, inputs=TAG),
        Step("p3", echo, compensation=undo, args={**TAG, "value": FromStep("child", "step")},
             retry=NO_RETRY),
    ],
)

slow_child = Saga(
    "t_slow_child",
    inputs=Tagged,
    steps=[
        Step("c1", succeed, compensation=undo, args=TAG),
        Step("long", work, compensation=undo, args={**TAG, "seconds": Const(10)},
             compensation_args=TAG),
    ],
)

parent_of_slow = Saga(
    "t_parent_of_slow",
    inputs=Tagged,
    steps=[
        Step("p1", succeed, compensation=undo, args=TAG),
        SubSaga("child", slow_child, inputs=TAG),
        Step("p3", succeed, compensation=undo, args=TAG),
    ],
)

dynamic = Saga(
    "t_dynamic",
    inputs=Tagged,
    steps=[
        Step("first", succeed, compensation=undo, args=TAG),
        Step("plan", plan_steps, args={**TAG, "seconds": Const(2)},
             adds=[succeed, undo, sleep]),
        Step("last", succeed, compensation=undo, args=TAG, retry=NO_RETRY),
    ],
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

#: A step that fails twice (retryably), then succeeds on its third attempt; it waits 1 s,
#: then 2 s, before its retries (long enough for a test to see it waiting).
retried = Saga(
    "t_retried",
    inputs=Tagged,
    steps=[Step("flaky", flaky, args={**TAG, "failures": Const(2)},
                retry=RetryPolicy(attempts=3, initial=timedelta(seconds=1)))],
)

#: A step that reports its progress unit by unit, each unit held until the test's gate
#: opens (``steps.gate_key``), at most 30 s.
with_progress = Saga(
    "t_with_progress",
    inputs=Tagged,
    steps=[Step("train", progressing, args={**TAG, "units": Const(3), "seconds": Const(30)})],
)

TEST_SAGAS = [with_headers, quick, across, long_step, undo_fails, too_slow, slow_start,
              cancellable, not_cooperative, slow_rollback, with_deadline, fan_out,
              fan_out_slow_undo, bounded, ends_in_group, with_fallback, with_pivot, child,
              parent, dynamic, slow_branches, slow_child, parent_of_slow, held_rollback,
              poison, poison_worker, retried, with_progress]
