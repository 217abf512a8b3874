"""The saga registry: sagas by name, and each described as data."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import pytest
from pydantic import BaseModel

from sagaline import (
    NO_RETRY,
    Const,
    FromInput,
    FromStep,
    RetryPolicy,
    Saga,
    SagaRegistry,
    Step,
    StepContext,
    UnknownSagaError,
    saga_task,
)
from sagaline.registry import describe_step


class Inputs(BaseModel):
    who: str


class Refused(Exception):
    """A failure no retry fixes."""


@saga_task("registry_test.act")
def act(ctx: StepContext, who: str) -> dict[str, str]:
    return {"id": who}


@saga_task("registry_test.undo", queue="slow")
def undo(ctx: StepContext, result: dict[str, str]) -> None:
    return None


SAGA = Saga(
    "described",
    description="A saga to describe.",
    inputs=Inputs,
    steps=[
        Step("first", act, compensation=undo, args={"who": FromInput("who")},
             retry=RetryPolicy(attempts=4, initial=timedelta(seconds=2), non_retryable=(Refused,)),
             time_limit=timedelta(seconds=7)),
        Step("second", act, args={"who": Const("x")}, retry=NO_RETRY, queue="gpu"),
    ],
    returns=FromStep("first", "id"),
    deadline=timedelta(minutes=2),
)


@pytest.fixture
def registry() -> SagaRegistry:
    registry = SagaRegistry()
    registry.add(SAGA)
    return registry


def test_names_are_sorted_and_describe_unknown_names_lists_the_known(
    registry: SagaRegistry,
) -> None:
    assert registry.names() == ["described"]
    with pytest.raises(UnknownSagaError, match=r"'nope' .*registered: described"):
        registry.describe("nope")


def test_describe_gives_every_step_with_its_compensation_and_policies(
    registry: SagaRegistry,
) -> None:
    """Each step's tasks, argument sources, policies (own or the saga's) and queue."""
    saga = registry.describe("described")

    assert (saga.name, saga.description, saga.inputs, saga.input_fields) == (
        "described", "A saga to describe.", "Inputs", ["who"])
    assert saga.returns == "FromStep('first', 'id')"
    assert saga.deadline_s == 120.0
    first, second = saga.steps
    assert (first.action, first.compensation) == ("registry_test.act", "registry_test.undo")
    assert first.args == {"who": "FromInput('who')"}
    assert first.compensation_args == {"result": "FromStep('first')"}
    assert first.retry is not None
    assert (first.retry.attempts, first.retry.initial_s, first.retry.source) == (4, 2.0, "step")
    assert first.retry.non_retryable == ["tests.test_registry.Refused"]
    assert first.compensation_retry is not None and first.compensation_retry.source == "saga"
    assert first.time_limit_s == 7.0
    assert (first.queue, first.compensation_queue) == (None, "slow")
    assert second.compensation is None and second.compensation_retry is None
    assert second.args == {"who": "Const('x')"}
    assert second.time_limit_s == 300.0
    assert (second.queue, second.compensation_queue) == ("gpu", None)


@dataclass(frozen=True)
class Group:
    """A kind of step this version's view does not know: steps run side by side."""

    name: str
    steps: tuple[Step, ...]
    pivot: bool = True


def test_other_kinds_of_step_are_described_as_far_as_they_go() -> None:
    """A step made of steps shows its kind, its members and its unknown attributes."""
    group = Group("both", (SAGA.steps[0], SAGA.steps[1]))

    described = describe_step(SAGA, group)

    assert (described.name, described.kind, described.action) == ("both", "Group", None)
    assert [s.name for s in described.steps] == ["first", "second"]
    assert described.extra == {"pivot": True}
    assert described.retry is None
