"""The rollback in-process: stages one at a time, a group's compensations in parallel, a
compensation that fails for good, and a branch that completes after its sibling failed.
"""

from __future__ import annotations

from datetime import timedelta

from sagaline import Parallel, RetryPolicy, Saga, Step
from sagaline.status import Role, SagaStatus, StepStatus

from .support import Delivered, InProcess, Nothing, refuse, succeed, undo, undo_flaky

in_reverse = Saga("rt_in_reverse", inputs=Nothing, steps=[
    Step("a", succeed, compensation=undo),
    Step("b", succeed, compensation=undo),
    Step("c", succeed),  # nothing to undo
    Step("d", succeed, compensation=undo),
    Step("e", refuse, compensation=undo),  # the saga's default policy: three attempts
])

group_then_failure = Saga("rt_group_then_failure", inputs=Nothing, steps=[
    Step("first", succeed, compensation=undo),
    Parallel("fan", [Step(f"b{i}", succeed, compensation=undo) for i in range(1, 4)]),
    Step("last", refuse, compensation=undo),
])

branch_fails = Saga("rt_branch_fails", inputs=Nothing, steps=[
    Step("first", succeed, compensation=undo),
    Parallel("fan", [
        Step("b1", succeed, compensation=undo),
        Step("b2", refuse, compensation=undo),
        Step("b3", succeed, compensation=undo),
    ]),
    Step("after", succeed, compensation=undo),
])

undo_fails = Saga("rt_undo_fails", inputs=Nothing, steps=[
    Step("a", succeed, compensation=undo),
    Step("b", succeed, compensation=undo_flaky,
         compensation_retry=RetryPolicy(attempts=2, initial=timedelta(0), jitter=0)),
    Step("c", succeed, compensation=undo),
    Step("d", refuse),
])


def test_a_step_that_gives_up_undoes_the_completed_steps_in_reverse_one_at_a_time(
    rt: InProcess,
) -> None:
    """A non-retryable error gives up at its first attempt; each compensation is sent only
    once the one before completed, last step first, and a step with none is skipped.
    """
    saga_id = rt.start(in_reverse)
    for step in "abcd":
        rt.deliver(f"{step}:action")

    failed = rt.deliver("e:action")

    assert failed.outcome == "failed"
    assert rt.transport.queued() == ["d:compensation"]
    rt.deliver("d:compensation")
    assert rt.transport.queued() == ["b:compensation"]
    rt.deliver("b:compensation")
    assert rt.transport.queued() == ["a:compensation"]
    rt.deliver("a:compensation")
    assert rt.transport.queued() == []
    run = rt.load(saga_id)
    assert run.status is SagaStatus.COMPENSATED
    assert run.step("e").attempts == 1
    assert rt.undone(saga_id) == ["d", "b", "a"]
    assert rt.transport.sent_as(Role.COMPENSATION) == ["d", "b", "a"]
    assert [t.step for t in run.log if t.event == "compensation.skipped"] == ["c"]
    assert [c for c in rt.calls if c.endswith(":compensation")] == [
        "d:compensation", "b:compensation", "a:compensation"]


def test_a_groups_compensations_are_sent_together_and_the_step_before_waits_for_all(
    rt: InProcess,
) -> None:
    """The group is one stage: its three compensations are sent at once (last branch first)
    and may end in any order; the step before the group is undone after the third.
    """
    saga_id = rt.start(group_then_failure)
    for message in ("first", "b1", "b2", "b3", "last"):
        rt.deliver(f"{message}:action")
    assert rt.transport.queued() == ["b3:compensation", "b2:compensation", "b1:compensation"]

    rt.deliver("b1:compensation")
    assert rt.transport.queued() == ["b3:compensation", "b2:compensation"]
    rt.deliver("b3:compensation")
    assert rt.transport.queued() == ["b2:compensation"]
    rt.deliver("b2:compensation")
    assert rt.transport.queued() == ["first:compensation"]
    rt.deliver("first:compensation")

    run = rt.load(saga_id)
    assert run.status is SagaStatus.COMPENSATED
    assert rt.undone(saga_id) == ["b1", "b3", "b2", "first"]
    assert rt.transport.sent_as(Role.COMPENSATION) == ["b3", "b2", "b1", "first"]
    assert len(run.compensations) == 4


def test_a_failing_branch_undoes_its_completed_siblings_then_the_steps_before(
    rt: InProcess,
) -> None:
    """The failed branch is not undone; its two completed siblings are, together; the step
    after the group never runs.
    """
    saga_id = rt.start(branch_fails)
    rt.deliver("first:action")
    assert rt.transport.queued() == ["b1:action", "b2:action", "b3:action"]
    rt.deliver("b1:action")
    rt.deliver("b3:action")

    assert rt.deliver("b2:action").outcome == "failed"

    assert rt.transport.queued() == ["b3:compensation", "b1:compensation"]
    rt.run()
    run = rt.load(saga_id)
    assert run.status is SagaStatus.COMPENSATED
    assert run.failed_step == "b2"
    assert rt.undone(saga_id) == ["b3", "b1", "first"]
    assert "after:action" not in rt.calls


def test_a_branch_that_completes_after_its_sibling_failed_is_compensated(
    rt: InProcess,
) -> None:
    """b2 fails while b3 runs: b3's compensation waits for b3 (b1's is sent at once); b3
    completing late makes its compensation due and goes no further; the step before the
    group is undone after both.
    """
    saga_id = rt.start(branch_fails)
    rt.deliver("first:action")
    rt.deliver("b1:action")
    failures: list[Delivered] = []
    rt.during["b3:action"] = lambda: failures.append(rt.deliver("b2:action"))

    late = rt.deliver("b3:action")

    assert [f.outcome for f in failures] == ["failed"]
    assert late.outcome == "skip"
    assert rt.transport.queued() == ["b1:compensation", "b3:compensation"]
    rt.run()
    run = rt.load(saga_id)
    assert run.status is SagaStatus.COMPENSATED
    assert rt.undone(saga_id) == ["b1", "b3", "first"]
    assert rt.transport.sent_as(Role.COMPENSATION) == ["b1", "b3", "first"]
    assert "after:action" not in rt.calls


def test_a_compensation_that_fails_for_good_is_recorded_and_the_others_go_on(
    rt: InProcess,
) -> None:
    """The compensation of b fails both its attempts: it is recorded and dead-lettered, a's is
    still sent and run, and the saga ends compensation_failed naming b.
    """
    saga_id = rt.start(undo_fails)

    delivered = rt.run()

    assert [(d.message.name, d.outcome) for d in delivered] == [
        ("a:action", "returned"),
        ("b:action", "returned"),
        ("c:action", "returned"),
        ("d:action", "failed"),
        ("c:compensation", "returned"),
        ("b:compensation", "retry"),
        ("b:compensation", "failed"),
        ("a:compensation", "returned"),
    ]
    run = rt.load(saga_id)
    assert run.status is SagaStatus.COMPENSATION_FAILED
    assert run.undone == ["b"]
    assert rt.undone(saga_id) == ["c", "a"]
    undo_b = run.step("b").compensation
    assert undo_b is not None
    assert (undo_b.status, undo_b.attempts) == (StepStatus.FAILED, 2)
    letters = [d for d in rt.store.dead_letters() if d.saga_id == saga_id]
    assert [(d.step, d.attempts) for d in letters] == [("b", 2)]
    assert run.log[-1].event == "saga.compensation_failed"
