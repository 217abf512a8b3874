"""Sagas that exist only for the engine's tests, built from ``steps``."""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel

from sagaline import NO_RETRY, Const, FromInput, RetryPolicy, Saga, Step

from .steps import fail, fail_undo, sleep, succeed, undo


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

TEST_SAGAS = [undo_fails, too_slow, slow_start]
