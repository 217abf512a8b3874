"""Stopping a saga in-process: cancel revokes what is queued and undoes what completed; an
action still running when its saga stopped is undone if it completes, left if it fails.
"""

from __future__ import annotations

from sagaline import Const, Fallback, Parallel, Saga, Step
from sagaline.status import Role, SagaStatus, StepStatus

from .support import InProcess, Nothing, backup, flaky, refuse, succeed, undo, undo_backup

cancellable = Saga("rt_cancellable", inputs=Nothing, steps=[
    Step("a", succeed, compensation=undo),
    Step("b", succeed, compensation=undo),
    Step("c", succeed, compensation=undo),
])

flaky_middle = Saga("rt_flaky_middle", inputs=Nothing, steps=[
    Step("a", succeed, compensation=undo),
    Step("b", flaky, compensation=undo, args={"failures": Const(9)}),
    Step("c", succeed, compensation=undo),
])

grouped = Saga("rt_cancel_group", inputs=Nothing, steps=[
    Step("first", succeed, compensation=undo),
    Parallel("fan", [Step(f"b{i}", succeed, compensation=undo) for i in range(1, 4)]),
    Step("after", succeed, compensation=undo),
])

with_fallback = Saga("rt_cancel_fallback", inputs=Nothing, steps=[
    Step("first", succeed, compensation=undo),
    Step("pay", refuse, compensation=undo, fallback=Fallback(backup, compensation=undo_backup)),
    Step("later", succeed, compensation=undo),
])


def test_cancel_revokes_the_queued_steps_and_undoes_the_completed_ones(rt: InProcess) -> None:
    """Cancelled after its first step: the steps not started are revoked by task id, never
    run, and the first step is undone once; the saga ends cancelled.
    """
    saga_id = rt.start(cancellable)
    rt.deliver("a:action")

    status = rt.supervisor.cancel(saga_id)

    assert status is SagaStatus.COMPENSATING
    assert rt.transport.revoked == [f"{saga_id}-b", f"{saga_id}-c"]
    assert rt.transport.queued() == ["b:action", "a:compensation"]
    delivered = rt.run()
    assert [(d.message.name, d.outcome) for d in delivered] == [
        ("b:action", "revoked"), ("a:compensation", "returned")]
    run = rt.load(saga_id)
    assert run.status is SagaStatus.CANCELLED
    assert run.cancel_requested
    assert rt.undone(saga_id) == ["a"]
    assert rt.calls == ["a:action", "a:compensation"]


def test_a_forward_message_delivered_after_a_cancel_despite_its_revoke_does_not_run(
    rt: InProcess,
) -> None:
    """A revoke can come too late (the message was already fetched): the claim refuses a
    forward step of a stopped saga, so it is dropped and the chain goes no further.
    """
    saga_id = rt.start(cancellable)
    rt.deliver("a:action")
    rt.supervisor.cancel(saga_id)

    late = rt.deliver_message(rt.take("b:action"), honour_revoke=False)

    assert late.outcome == "skip"
    assert rt.transport.queued() == ["a:compensation"]
    rt.run()
    assert rt.calls == ["a:action", "a:compensation"]
    assert rt.load(saga_id).status is SagaStatus.CANCELLED


def test_cancel_with_nothing_completed_ends_the_saga_cancelled_at_once(rt: InProcess) -> None:
    """Nothing to undo: the saga is cancelled by the call itself, every forward message is
    revoked, and no compensation is sent.
    """
    saga_id = rt.start(cancellable)

    status = rt.supervisor.cancel(saga_id)

    assert status is SagaStatus.CANCELLED
    assert rt.transport.revoked == [f"{saga_id}-a", f"{saga_id}-b", f"{saga_id}-c"]
    assert [d.outcome for d in rt.run()] == ["revoked"]
    assert rt.calls == []
    assert rt.undone(saga_id) == []


def test_cancelling_a_saga_already_ended_leaves_it_as_it_is(rt: InProcess) -> None:
    """A completed saga is not cancelled: nothing is revoked and nothing undone."""
    saga_id = rt.start(cancellable)
    rt.run()

    status = rt.supervisor.cancel(saga_id)

    assert status is SagaStatus.COMPLETED
    assert rt.transport.revoked == []
    assert rt.transport.queued() == []
    assert rt.undone(saga_id) == []


def test_an_action_that_completes_after_its_saga_was_cancelled_is_compensated(
    rt: InProcess,
) -> None:
    """Step b runs while the saga is cancelled: its compensation waits for it, b completing makes
    it due (the chain stops there), then a is undone; each once, in reverse.
    """
    saga_id = rt.start(cancellable)
    rt.deliver("a:action")
    statuses: list[SagaStatus] = []
    rt.during["b:action"] = lambda: statuses.append(rt.supervisor.cancel(saga_id))

    late = rt.deliver("b:action")

    assert statuses == [SagaStatus.COMPENSATING]
    assert late.outcome == "skip"
    assert rt.transport.revoked == [f"{saga_id}-c"]
    assert rt.transport.queued() == ["b:compensation"]
    rt.deliver("b:compensation")
    assert rt.transport.queued() == ["a:compensation"]
    rt.deliver("a:compensation")
    run = rt.load(saga_id)
    assert run.status is SagaStatus.CANCELLED
    assert rt.undone(saga_id) == ["b", "a"]
    assert rt.calls == ["a:action", "b:action", "b:compensation", "a:compensation"]


def test_an_action_that_fails_after_its_saga_was_cancelled_is_neither_retried_nor_undone(
    rt: InProcess,
) -> None:
    """Step b fails (retryably) while the saga is cancelled: no retry, its compensation is
    skipped, and the rollback goes on with a.
    """
    saga_id = rt.start(flaky_middle)
    rt.deliver("a:action")

    def cancel() -> None:
        rt.supervisor.cancel(saga_id)

    rt.during["b:action"] = cancel

    late = rt.deliver("b:action")

    assert late.outcome == "skip"
    assert rt.transport.queued() == ["a:compensation"]
    rt.run()
    run = rt.load(saga_id)
    assert run.status is SagaStatus.CANCELLED
    assert run.step("b").attempts == 1
    undo_b = run.step("b").compensation
    assert undo_b is not None
    assert undo_b.status is StepStatus.SKIPPED
    assert rt.undone(saga_id) == ["a"]
    assert rt.calls == ["a:action", "b:action", "a:compensation"]


def test_a_fallback_that_completes_after_its_saga_was_cancelled_is_undone_by_its_own_undo(
    rt: InProcess,
) -> None:
    """The fallback runs while the saga is cancelled: the queued step after it and the
    fallback's own message id are revoked; the fallback completing late is undone by the
    fallback's compensation, then the first step; the step after never runs.
    """
    saga_id = rt.start(with_fallback)
    rt.deliver("first:action")
    assert rt.deliver("pay:action").outcome == "skip"

    def cancel() -> None:
        rt.supervisor.cancel(saga_id)

    rt.during["pay:fallback"] = cancel

    late = rt.deliver("pay:fallback")

    assert late.outcome == "skip"
    assert rt.transport.revoked == [f"{saga_id}-later", f"{saga_id}-pay-fallback"]
    assert rt.transport.queued() == ["pay:compensation"]
    assert rt.transport.queue[0].envelope.undoes_fallback
    rt.run()
    run = rt.load(saga_id)
    assert run.status is SagaStatus.CANCELLED
    assert rt.undone(saga_id) == ["pay", "first"]
    assert run.compensations == ["undo_backup", "undo"]
    assert rt.transport.sent_as(Role.COMPENSATION) == ["pay", "first"]
    assert "later:action" not in rt.calls


def test_cancel_mid_group_revokes_the_branches_still_queued_and_the_steps_after(
    rt: InProcess,
) -> None:
    """Cancelled after one branch of a group ran: its sibling branches still queued are
    revoked with the steps after the group, so they never run; what completed is undone.
    """
    saga_id = rt.start(grouped)
    rt.deliver("first:action")
    rt.deliver("b3:action")

    rt.supervisor.cancel(saga_id)

    assert {f"{saga_id}-b1", f"{saga_id}-b2", f"{saga_id}-after"} <= set(rt.transport.revoked)
    rt.run()
    assert rt.load(saga_id).status is SagaStatus.CANCELLED
    assert rt.calls == ["first:action", "b3:action", "b3:compensation", "first:compensation"]
