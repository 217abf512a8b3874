"""The forward path in-process: chains, retries, fallbacks, groups and duplicate deliveries."""

from __future__ import annotations

from datetime import timedelta

from sagaline import NO_RETRY, Const, Fallback, FromStep, Parallel, RetryPolicy, Saga, Step
from sagaline.status import Role, SagaStatus, StepStatus

from .support import (
    Delivered,
    InProcess,
    Nothing,
    backup,
    echo,
    flaky,
    refuse,
    succeed,
    undo,
    undo_backup,
)

#: Retries at once (no waiting in tests), giving up after two attempts.
TWO_ATTEMPTS = RetryPolicy(attempts=2, initial=timedelta(0), jitter=0)

chain = Saga("rt_chain", inputs=Nothing, steps=[
    Step("a", succeed, compensation=undo),
    Step("b", echo, compensation=undo, args={"value": FromStep("a", "step")}),
    Step("c", succeed, compensation=undo),
])

retried = Saga("rt_retried", inputs=Nothing, steps=[
    Step("call", flaky, args={"failures": Const(2)},
         retry=RetryPolicy(attempts=3, initial=timedelta(seconds=2), multiplier=2, jitter=0)),
    Step("after", succeed),
])

gives_up = Saga("rt_gives_up", inputs=Nothing, steps=[
    Step("first", succeed, compensation=undo),
    Step("call", flaky, compensation=undo, args={"failures": Const(9)}, retry=TWO_ATTEMPTS),
    Step("after", succeed, compensation=undo),
])

with_fallback = Saga("rt_with_fallback", inputs=Nothing, steps=[
    Step("first", succeed, compensation=undo),
    Step("pay", flaky, compensation=undo, args={"failures": Const(9)}, retry=TWO_ATTEMPTS,
         fallback=Fallback(backup, compensation=undo_backup)),
    Step("later", echo, compensation=undo, args={"value": FromStep("pay", "via")}),
])

fallback_then_failure = Saga("rt_fallback_then_failure", inputs=Nothing, steps=[
    Step("first", succeed, compensation=undo),
    Step("pay", refuse, compensation=undo, fallback=Fallback(backup, compensation=undo_backup)),
    Step("later", refuse, compensation=undo),
])

fallback_fails = Saga("rt_fallback_fails", inputs=Nothing, steps=[
    Step("first", succeed, compensation=undo),
    Step("pay", refuse, compensation=undo, fallback=Fallback(refuse, retry=NO_RETRY)),
    Step("later", succeed, compensation=undo),
])

bounded = Saga("rt_bounded", inputs=Nothing, steps=[
    Step("first", succeed),
    Parallel("fan", [Step(f"p{i}", succeed) for i in range(1, 5)], max_concurrency=2),
    Step("after", echo, args={"value": FromStep("p4", "step")}),
])


def test_a_chain_is_sent_once_and_each_step_runs_once_in_order(rt: InProcess) -> None:
    """The steps up to the end form one chain; each step goes on only when the one before
    returned, and the last one completes the saga with its result.
    """
    saga_id = rt.start(chain)

    delivered = rt.run()

    assert [d.outcome for d in delivered] == ["returned"] * 3
    assert [e.step for e in rt.transport.sent] == ["a"]  # one chain, one message sent
    assert rt.calls == ["a:action", "b:action", "c:action"]
    assert delivered[1].value == {"echo": "a"}
    run = rt.load(saga_id)
    assert run.status is SagaStatus.COMPLETED
    assert run.result == {"step": "c", "attempt": 1}
    assert run.compensations == []


def test_a_failing_step_is_retried_after_its_policys_delays_then_goes_on(rt: InProcess) -> None:
    """Two transient failures ask for a retry after 2 s, then 4 s (the policy's delays); the
    third attempt succeeds and only then does the chain send the next step.
    """
    saga_id = rt.start(retried)

    delivered = rt.run()

    assert [(d.message.name, d.outcome, d.delay_s) for d in delivered] == [
        ("call:action", "retry", 2.0),
        ("call:action", "retry", 4.0),
        ("call:action", "returned", None),
        ("after:action", "returned", None),
    ]
    run = rt.load(saga_id)
    assert run.status is SagaStatus.COMPLETED
    assert run.step("call").attempts == 3
    assert run.step("call").result == {"step": "call", "attempt": 3}
    assert [t.attempt for t in run.log if t.event == "action.retrying"] == [1, 2]


def test_a_step_that_keeps_failing_gives_up_after_its_attempts_and_is_rolled_back(
    rt: InProcess,
) -> None:
    """After its two attempts the step fails for good: the errback turns the saga
    compensating, the step before is undone once, and the step after never runs.
    """
    saga_id = rt.start(gives_up)

    delivered = rt.run()

    assert [(d.message.name, d.outcome) for d in delivered] == [
        ("first:action", "returned"),
        ("call:action", "retry"),
        ("call:action", "failed"),
        ("first:compensation", "returned"),
    ]
    assert rt.calls == ["first:action", "call:action", "call:action", "first:compensation"]
    run = rt.load(saga_id)
    assert run.status is SagaStatus.COMPENSATED
    assert run.failed_step == "call"
    assert run.step("call").attempts == 2
    assert run.step("call").status is StepStatus.FAILED
    assert rt.undone(saga_id) == ["first"]
    assert len(run.compensations) == 1


def test_a_step_that_gives_up_sends_its_fallback_and_the_saga_goes_on_with_its_result(
    rt: InProcess,
) -> None:
    """The action gives up after its retries: the chain stops, the fallback is sent; the
    fallback completing sends the next step, which reads the fallback's result.
    """
    saga_id = rt.start(with_fallback)
    rt.deliver("first:action")
    assert rt.deliver("pay:action").outcome == "retry"

    gave_up = rt.deliver("pay:action")

    assert gave_up.outcome == "skip"
    assert rt.transport.queued() == ["pay:fallback"]
    assert rt.deliver("pay:fallback").outcome == "returned"
    assert rt.transport.queued() == ["later:action"]
    later = rt.deliver("later:action")
    assert later.value == {"echo": "backup"}
    run = rt.load(saga_id)
    assert run.status is SagaStatus.COMPLETED
    assert run.step("pay").status is StepStatus.FAILED
    fallback = run.step("pay").fallback
    assert fallback is not None
    assert fallback.status is StepStatus.COMPLETED
    assert rt.calls == ["first:action", "pay:action", "pay:action", "pay:fallback",
                        "later:action"]


def test_a_later_failure_undoes_the_fallback_with_the_fallbacks_own_compensation(
    rt: InProcess,
) -> None:
    """The step completed by its fallback is undone by the fallback's compensation (its
    message says so), then the step before; each once, in reverse.
    """
    saga_id = rt.start(fallback_then_failure)

    delivered = rt.run()

    assert [(d.message.name, d.outcome) for d in delivered] == [
        ("first:action", "returned"),
        ("pay:action", "skip"),
        ("pay:fallback", "returned"),
        ("later:action", "failed"),
        ("pay:compensation", "returned"),
        ("first:compensation", "returned"),
    ]
    undo_pay = delivered[4]
    assert undo_pay.message.envelope.undoes_fallback
    assert undo_pay.message.task_id == f"{saga_id}-pay-fallback-undo"
    assert undo_pay.value == {"undone": "pay", "via": "backup"}
    run = rt.load(saga_id)
    assert run.status is SagaStatus.COMPENSATED
    assert rt.undone(saga_id) == ["pay", "first"]
    assert run.compensations == ["undo_backup", "undo"]


def test_a_fallback_that_fails_too_fails_the_saga_and_the_steps_before_are_undone(
    rt: InProcess,
) -> None:
    """The fallback's own errback fails the saga; the step after never runs."""
    saga_id = rt.start(fallback_fails)

    delivered = rt.run()

    assert [(d.message.name, d.outcome) for d in delivered] == [
        ("first:action", "returned"),
        ("pay:action", "skip"),
        ("pay:fallback", "failed"),
        ("first:compensation", "returned"),
    ]
    run = rt.load(saga_id)
    assert run.status is SagaStatus.COMPENSATED
    assert run.failed_step == "pay"
    assert rt.undone(saga_id) == ["first"]
    assert "later:action" not in rt.calls


def test_a_group_starts_no_more_branches_than_its_bound_and_its_last_branch_goes_on(
    rt: InProcess,
) -> None:
    """Two of four branches start; each one completing starts the next pending one; only the
    last branch to complete, whichever it is, sends the step after the group.
    """
    saga_id = rt.start(bounded)
    rt.deliver("first:action")
    assert rt.transport.queued() == ["p1:action", "p2:action"]

    rt.deliver("p2:action")
    assert rt.transport.queued() == ["p1:action", "p3:action"]
    rt.deliver("p1:action")
    assert rt.transport.queued() == ["p3:action", "p4:action"]
    rt.deliver("p4:action")
    assert rt.transport.queued() == ["p3:action"]
    rt.deliver("p3:action")
    assert rt.transport.queued() == ["after:action"]
    rt.deliver("after:action")

    assert rt.transport.sent_as(Role.ACTION) == ["first", "p1", "p2", "p3", "p4", "after"]
    run = rt.load(saga_id)
    assert run.status is SagaStatus.COMPLETED
    assert run.result == {"echo": "p4"}


def test_a_duplicate_of_a_completed_chain_step_returns_its_recorded_result_unrun(
    rt: InProcess,
) -> None:
    """Delivered again before the next step started, a completed step returns the result it
    recorded without running; the chain's extra messages run nothing twice either.
    """
    saga_id = rt.start(chain)
    first = rt.deliver("a:action")

    again = rt.deliver_message(first.message)

    assert again.outcome == "returned"
    assert again.value == first.value == {"step": "a", "attempt": 1}
    assert rt.calls == ["a:action"]
    rt.run()
    assert rt.calls == ["a:action", "b:action", "c:action"]
    run = rt.load(saga_id)
    assert run.status is SagaStatus.COMPLETED
    assert [s.attempts for s in run.steps] == [1, 1, 1]


def test_a_duplicate_of_a_chain_step_the_saga_went_past_is_dropped(rt: InProcess) -> None:
    """Once the next step started, a completed step delivered again is a Skip: the chain is
    not sent on a second time.
    """
    saga_id = rt.start(chain)
    first = rt.deliver("a:action")
    rt.deliver("b:action")

    again = rt.deliver_message(first.message)

    assert again.outcome == "skip"
    assert rt.transport.queued() == ["c:action"]
    assert rt.calls == ["a:action", "b:action"]
    assert rt.load(saga_id).step("a").attempts == 1


def test_a_duplicate_of_a_completed_branch_is_dropped(rt: InProcess) -> None:
    """A branch is outside any chain: delivered again after it completed, it is a Skip and
    starts no other branch.
    """
    saga_id = rt.start(bounded)
    rt.deliver("first:action")
    branch = rt.deliver("p1:action")
    assert rt.transport.queued() == ["p2:action", "p3:action"]

    again = rt.deliver_message(branch.message)

    assert again.outcome == "skip"
    assert rt.transport.queued() == ["p2:action", "p3:action"]
    assert rt.calls.count("p1:action") == 1
    assert rt.load(saga_id).step("p1").attempts == 1


def test_a_duplicate_delivered_while_the_step_runs_comes_back_later_and_does_not_run_it(
    rt: InProcess,
) -> None:
    """The attempt holds a live lease: the duplicate is asked to come back (at most 2 s
    later) and, once the step completed, returns the recorded result without running it.
    """
    saga_id = rt.start(chain)
    message = rt.take("a:action")
    meanwhile: list[Delivered] = []
    rt.during["a:action"] = lambda: meanwhile.append(rt.deliver_message(message))

    first = rt.deliver_message(message)

    assert [(d.outcome, d.delay_s) for d in meanwhile] == [("retry", 2.0)]
    assert rt.transport.queued() == ["a:action", "b:action"]
    again = rt.deliver("a:action")
    assert again.outcome == "returned"
    assert again.value == first.value
    assert rt.calls == ["a:action"]
    assert rt.load(saga_id).step("a").attempts == 1
