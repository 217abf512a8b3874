"""Sagas whose steps go wrong after their function did its work, or with odd errors.

Each runs on the test workers; ``tests/test_nothing_escapes.py`` checks that what ran is
recorded and undone, and that nothing runs twice.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sagaline import FromStep, RetryPolicy, Saga, Step, StepContext, saga_task

from .sagas import TAG, Tagged
from .steps import Boom, note, succeed, undo


class Opaque:
    """A value JSON cannot encode."""

    def __repr__(self) -> str:
        return "Opaque()"


class OddFlaky(Exception):
    """A retryable failure whose details JSON cannot encode."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.details = {"thing": Opaque(), "count": 2}


@saga_task("testing.unencodable")
def unencodable(ctx: StepContext, tag: str) -> dict[str, Any]:
    """Note the call (its effect) and return a value JSON cannot encode."""
    note(tag, f"{ctx.step}:{ctx.role.value}")
    return {"thing": Opaque()}


@saga_task("testing.fail_oddly")
def fail_oddly(ctx: StepContext, tag: str) -> dict[str, Any]:
    """Note the call and fail for good, with details JSON cannot encode."""
    note(tag, f"{ctx.step}:{ctx.role.value}")
    raise Boom(f"{ctx.step} failed with odd details", thing=Opaque(), step=ctx.step)


@saga_task("testing.flake_oddly")
def flake_oddly(ctx: StepContext, tag: str) -> dict[str, Any]:
    """Note the attempt and fail retryably, with details JSON cannot encode."""
    note(tag, f"{ctx.step}:{ctx.role.value}:{ctx.attempt}")
    raise OddFlaky(f"{ctx.step} flaked with odd details")


@saga_task("testing.plain")
def plain(ctx: object, tag: str) -> str:
    """Note the call without reading the context (it may be called outside a saga)."""
    note(tag, "plain")
    return "plain"


QUICK_TWICE = RetryPolicy(attempts=2, initial=timedelta(milliseconds=50))

bad_returns = Saga(
    "t_bad_returns",
    inputs=Tagged,
    steps=[
        Step("first", succeed, compensation=undo, args=TAG, compensation_args=TAG),
        Step("last", succeed, compensation=undo, args=TAG, compensation_args=TAG),
    ],
    returns={"missing": FromStep("last", "no_such_field")},
)

returns_unencodable = Saga(
    "t_returns_unencodable",
    inputs=Tagged,
    steps=[
        Step("first", succeed, compensation=undo, args=TAG, compensation_args=TAG),
        Step("odd", unencodable, compensation=undo, args=TAG, compensation_args=TAG),
        Step("never", succeed, compensation=undo, args=TAG, compensation_args=TAG),
    ],
)

odd_details = Saga(
    "t_odd_details",
    inputs=Tagged,
    steps=[
        Step("first", succeed, compensation=undo, args=TAG, compensation_args=TAG),
        Step("odd", fail_oddly, args=TAG),
    ],
)

odd_details_retried = Saga(
    "t_odd_details_retried",
    inputs=Tagged,
    steps=[
        Step("first", succeed, compensation=undo, args=TAG, compensation_args=TAG),
        Step("odd", flake_oddly, args=TAG, retry=QUICK_TWICE),
    ],
)

plain_step = Saga("t_plain", inputs=Tagged, steps=[Step("only", plain, args=TAG)])

ESCAPE_SAGAS = [bad_returns, returns_unencodable, odd_details, odd_details_retried, plain_step]
