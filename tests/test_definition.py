"""Declaring sagas: mistakes are refused when declared, with a message that says the fix."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from sagaline import (
    Const,
    DefinitionError,
    FromInput,
    FromStep,
    InvalidInputError,
    RetryPolicy,
    Saga,
    Step,
    StepContext,
    saga_task,
)


class In(BaseModel):
    name: str
    count: int = 1


@saga_task("defs.make")
def make(ctx: StepContext, name: str, count: int = 1) -> dict[str, Any]:
    return {"id": name}


@saga_task("defs.unmake")
def unmake(ctx: StepContext, id: str) -> None:
    return None


@saga_task("defs.use")
def use(ctx: StepContext, thing: str) -> str:
    return thing


def test_a_well_formed_saga_declares_and_exposes_its_steps() -> None:
    saga = Saga("ok", inputs=In, steps=[
        Step("make", make, compensation=unmake, args={"name": FromInput("name")},
             compensation_args={"id": FromStep("make", "id")}),
        Step("use", use, args={"thing": FromStep("make", "id")}),
    ], returns=FromStep("use"))
    assert [s.name for s in saga.steps] == ["make", "use"]
    assert saga.step("use").results_needed() == ["make"]
    assert [row[:2] for row in saga.rollback_table()] == [["make", True], ["use", False]]
    assert saga.build_result({}, {"use": "x"}) == "x"


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ([Step("use", use, args={"thing": FromStep("later")})],
         "takes the result of 'later', which is not an earlier step"),
        ([Step("make", make, args={"name": FromInput("nope")})],
         "takes input 'nope', which In does not declare"),
        ([Step("make", make, args={})], "defs.make needs 'name'"),
        ([Step("make", make, args={"name": FromInput("name"), "colour": Const("red")})],
         "defs.make takes no argument 'colour'"),
        ([Step("make", make, args={"name": FromInput("name")}),
          Step("make", make, args={"name": FromInput("name")})],
         "declares step 'make' twice"),
        ([Step("make", make, compensation=unmake, args={"name": FromInput("name")})],
         "defs.unmake needs 'id'"),
        ([], "has no steps"),
    ],
)
def test_a_wrong_declaration_is_refused_with_what_to_fix(steps: list[Step], message: str) -> None:
    with pytest.raises(DefinitionError, match=message):
        Saga("bad", inputs=In, steps=steps)


def test_step_and_saga_names_must_be_identifiers() -> None:
    with pytest.raises(DefinitionError, match="step name 'Make It'"):
        Step("Make It", make)
    with pytest.raises(DefinitionError, match="saga name 'Bad-Name'"):
        Saga("Bad-Name", inputs=In, steps=[Step("make", make, args={"name": FromInput("name")})])


def test_a_step_action_must_be_a_declared_saga_task() -> None:
    def plain(ctx: StepContext) -> None:
        return None

    with pytest.raises(DefinitionError, match=r"declare the function with @saga_task"):
        Step("plain", plain)  # type: ignore[arg-type]


def test_saga_task_names_and_signatures_are_checked() -> None:
    with pytest.raises(DefinitionError, match="dotted identifiers"):
        saga_task("nodot")
    with pytest.raises(DefinitionError, match="first positional parameter"):
        saga_task("defs.bad")(lambda *, x: x)


def test_inputs_are_validated_into_json_and_errors_name_each_field() -> None:
    saga = Saga("ok2", inputs=In, steps=[Step("make", make, args={"name": FromInput("name")})])
    assert saga.validate_inputs({"name": "a", "count": "3"}) == {"name": "a", "count": 3}
    with pytest.raises(InvalidInputError) as raised:
        saga.validate_inputs({"count": "many"})
    assert {e["field"] for e in raised.value.errors} == {"name", "count"}
    with pytest.raises(InvalidInputError, match=r"\(inputs\)"):
        saga.validate_inputs([1, 2])  # type: ignore[arg-type]


def test_the_default_compensation_arguments_are_those_it_takes() -> None:
    @saga_task("defs.undo_with_result")
    def undo_with_result(ctx: StepContext, name: str, result: dict[str, Any]) -> None:
        return None

    step = Step("make", make, compensation=undo_with_result,
                args={"name": FromInput("name"), "count": FromInput("count")})
    assert dict(step.undo_args) == {"name": FromInput("name"), "result": FromStep("make")}


def test_retry_policy_backs_off_exponentially_within_its_jitter() -> None:
    policy = RetryPolicy(attempts=5, initial=timedelta(seconds=1), multiplier=2,
                         maximum=timedelta(seconds=5), jitter=0.1)
    assert [policy.base_delay(n) for n in (1, 2, 3, 4)] == [1, 2, 4, 5]
    for attempt, base in ((1, 1), (2, 2), (3, 4)):
        delays = {policy.delay(attempt) for _ in range(200)}
        assert all(base * 0.9 <= d <= base * 1.1 for d in delays)
        assert len(delays) > 100  # jittered, not constant


def test_retry_policy_never_retries_listed_or_flagged_errors() -> None:
    class Permanent(Exception):
        pass

    class Flagged(Exception):
        non_retryable = True

    policy = RetryPolicy(attempts=3, non_retryable=(Permanent,))
    assert policy.should_retry(ValueError(), 1)
    assert not policy.should_retry(ValueError(), 3)
    assert not policy.should_retry(Permanent(), 1)
    assert not policy.should_retry(Flagged(), 1)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"attempts": 0}, "attempts"), ({"multiplier": 0.5}, "multiplier"),
     ({"jitter": 2}, "jitter"), ({"non_retryable": ("x",)}, "non_retryable")],
)
def test_retry_policy_refuses_nonsense_naming_the_field(kwargs: dict[str, Any], field: str
                                                         ) -> None:
    with pytest.raises(DefinitionError, match=field):
        RetryPolicy(**kwargs)


class _Booked(BaseModel):
    booking_id: str
    seats: list[int]


@saga_task("testing_def.book")
def _book(ctx: StepContext) -> _Booked:
    return _Booked(booking_id="b", seats=[1])


@saga_task("testing_def.anything")
def _anything(ctx: StepContext) -> dict[str, Any]:
    return {}


class _NoInput(BaseModel):
    pass


@pytest.mark.parametrize(("path", "problem"), [
    (("booking",), "_Booked has no field 'booking' (it has booking_id, seats)"),
    (("seats", "first"), "_Booked['seats'], a list, which has no field 'first'"),
    (("booking_id", 0, "x"), "_Booked['booking_id'] is not a list"),
])
def test_a_returns_path_the_declared_result_type_lacks_is_refused_when_declared(
    path: tuple[str | int, ...], problem: str
) -> None:
    """A step declaring its result as a model: a path that model cannot have is a mistake
    found when the saga is declared, not after the step did its work.
    """
    with pytest.raises(DefinitionError) as raised:
        Saga("t_paths", inputs=_NoInput, steps=[Step("book", _book)],
             returns={"value": FromStep("book", *path)})

    assert problem in str(raised.value)
    assert "saga 't_paths', returns" in str(raised.value)


def test_paths_a_result_type_allows_or_cannot_judge_are_accepted() -> None:
    """A path the model has, an item of a list field, or any path into an undeclared dict."""
    saga = Saga("t_paths_ok", inputs=_NoInput,
                steps=[Step("book", _book), Step("other", _anything)],
                returns={"id": FromStep("book", "booking_id"),
                         "seat": FromStep("book", "seats", 0),
                         "free": FromStep("other", "whatever", 3)})

    assert saga.results_for_return() == ["book", "other"]
