"""Signals in-process: an action waits for the outside world without holding a worker.

Each test writes out the deliveries it needs: a signal that wakes a waiting step, one sent
before the saga reached it, one sent twice, one that came while the step ran, a deadline
met by the delayed message or by the sweep, a cancel while it waits.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from sagaline import (
    Const,
    InvalidSignalError,
    Parallel,
    Saga,
    SagaNotFoundError,
    StateError,
    Step,
    StepContext,
    saga_task,
)
from sagaline.errors import SignalTimeoutError
from sagaline.status import Role, SagaStatus, StepStatus

from .support import InProcess, Nothing, succeed, undo

#: Called between the approval step's read of its signals and its wait (a race to stage).
BETWEEN_READ_AND_WAIT: list[Callable[[], None]] = []


@saga_task("rt.await_approvals")
def await_approvals(ctx: StepContext, needed: int, timeout_s: float) -> dict[str, Any]:
    """Complete once ``needed`` distinct approvers sent an ``approval`` signal."""
    approvers = sorted({str(s.get("approver")) for s in ctx.signals("approval")})
    if len(approvers) < needed:
        while BETWEEN_READ_AND_WAIT:
            BETWEEN_READ_AND_WAIT.pop(0)()
        ctx.wait_for("approval", timeout=timeout_s,
                     reason=f"{len(approvers)} of the {needed} approvals came")
    return {"approvers": approvers}


@saga_task("rt.await_webhook")
def await_webhook(ctx: StepContext) -> dict[str, Any]:
    """Return the first ``paid`` signal's payload, waiting for it if need be."""
    return ctx.signal("paid", timeout=timedelta(minutes=5))


def approval_saga(name: str, timeout_s: float = 60.0) -> Saga:
    """A step, then one waiting for two approvals, then another."""
    return Saga(name, inputs=Nothing, steps=[
        Step("prepare", succeed, compensation=undo),
        Step("approve", await_approvals,
             args={"needed": Const(2), "timeout_s": Const(timeout_s)}),
        Step("apply", succeed, compensation=undo),
    ])


approvals = approval_saga("rt_signal_approvals")
quick = approval_saga("rt_signal_quick", timeout_s=0.3)

grouped = Saga("rt_signal_group", inputs=Nothing, steps=[
    Parallel("both", [
        Step("webhook", await_webhook),
        Step("other", succeed, compensation=undo),
    ]),
    Step("after", succeed),
])


def test_a_waiting_step_holds_nothing_and_each_new_signal_runs_it_again(rt: InProcess) -> None:
    """The step waits (its message dropped, a delayed message for its deadline sent); each
    new approval runs it again; a repeated one changes nothing; with two approvers it
    completes and the chain goes on. Waiting spends no attempt.
    """
    saga_id = rt.start(approvals)
    rt.deliver("prepare:action")
    assert rt.deliver("approve:action").outcome == "skip"

    step = rt.load(saga_id).step("approve")
    assert step.status is StepStatus.WAITING
    assert step.signal == "approval"
    assert step.wait_until is not None
    assert rt.transport.queued() == ["approve:action"]  # the deadline's delayed message
    [(name, countdown)] = rt.transport.delayed
    assert name == "approve:action"
    assert 59 < countdown < 61
    assert rt.deliver("approve:action").outcome == "skip"  # before its deadline: dropped

    first = rt.runtime.signals.send(saga_id, "approval", {"approver": "ana"})
    assert (first.outcome, first.woken, first.received) == ("delivered", ["approve"], 1)
    assert rt.deliver("approve:action").outcome == "skip"  # one of two: it waits again

    again = rt.runtime.signals.send(saga_id, "approval", {"approver": "ana"})
    assert (again.outcome, again.woken) == ("duplicate", [])
    assert rt.transport.queued() == []

    rt.runtime.signals.send(saga_id, "approval", {"approver": "bob"})
    rt.run()

    run = rt.load(saga_id)
    assert run.status is SagaStatus.COMPLETED
    approve = run.step("approve")
    assert approve.result == {"approvers": ["ana", "bob"]}
    assert approve.attempts == 1
    assert approve.signal is None
    assert rt.calls.count("approve:action") == 3
    assert len(rt.transport.delayed) == 1  # the deadline is set once
    events = [t.event for t in run.log]
    assert events.count("action.waiting") == 2
    assert events.count("signal.received") == 2
    assert events.count("action.woken") == 2


def test_signals_sent_before_the_saga_reaches_its_step_are_kept(rt: InProcess) -> None:
    """Approvals sent while the saga is still at its first step are there when the step
    reads them: it never waits.
    """
    saga_id = rt.start(approvals)
    for approver in ("ana", "bob", "ana"):
        rt.runtime.signals.send(saga_id, "approval", {"approver": approver})

    rt.run()

    run = rt.load(saga_id)
    assert run.status is SagaStatus.COMPLETED
    assert run.step("approve").result == {"approvers": ["ana", "bob"]}
    assert rt.transport.delayed == []
    assert "action.waiting" not in [t.event for t in run.log]


def test_a_signal_that_comes_between_the_read_and_the_wait_is_not_missed(
        rt: InProcess) -> None:
    """The step read one approval; the second comes before it waits: it runs again at
    once instead of waiting for a third.
    """
    saga_id = rt.start(approvals)
    rt.runtime.signals.send(saga_id, "approval", {"approver": "ana"})
    BETWEEN_READ_AND_WAIT.append(
        lambda: rt.runtime.signals.send(saga_id, "approval", {"approver": "bob"}))

    rt.run()

    assert rt.load(saga_id).status is SagaStatus.COMPLETED
    assert rt.calls.count("approve:action") == 2
    assert rt.transport.delayed == []


def test_past_its_deadline_the_step_fails_and_the_saga_rolls_back(rt: InProcess) -> None:
    """The delayed message comes after the deadline: the step runs once more, still lacks
    an approval, and fails with a SignalTimeoutError naming the signal and the reason; what
    completed before is undone.
    """
    saga_id = rt.start(quick)
    rt.deliver("prepare:action")
    rt.deliver("approve:action")
    rt.runtime.signals.send(saga_id, "approval", {"approver": "ana"})
    rt.deliver("approve:action")  # woken: one of two, waits again
    time.sleep(0.4)

    delivered = rt.deliver("approve:action")  # the deadline's message
    rt.run()

    assert delivered.outcome == "failed"
    assert isinstance(delivered.error, SignalTimeoutError)
    run = rt.load(saga_id)
    assert run.status is SagaStatus.COMPENSATED
    assert run.error is not None
    assert run.error.type == "sagaline.errors.SignalTimeoutError"
    assert "1 of the 2 approvals came" in run.error.message
    assert run.error.details["received"] == 1
    assert run.step("approve").status is StepStatus.FAILED
    assert rt.undone(saga_id) == ["prepare"]


def test_the_sweep_fails_a_step_whose_deadline_passed_when_its_message_was_lost(
        rt: InProcess) -> None:
    """Without the delayed message, the recovery sweep sends the step once its deadline
    passed (not before), and it fails there.
    """
    saga_id = rt.start(quick)
    rt.deliver("prepare:action")
    rt.deliver("approve:action")
    rt.take("approve:action")  # the delayed message, lost
    assert rt.supervisor.recover() == {}

    time.sleep(0.4)
    assert rt.supervisor.recover() == {"signal_timeout": 1}
    rt.run()

    run = rt.load(saga_id)
    assert run.status is SagaStatus.COMPENSATED
    assert run.recoveries == 0


def test_a_cancel_while_it_waits_stops_the_saga_at_once(rt: InProcess) -> None:
    """Nothing of the waiting step is undone; the completed step is. The saga then takes
    no signals, and the step's delayed message runs nothing.
    """
    saga_id = rt.start(approvals)
    rt.deliver("prepare:action")
    rt.deliver("approve:action")

    rt.supervisor.cancel(saga_id)
    rt.run()

    run = rt.load(saga_id)
    assert run.status is SagaStatus.CANCELLED
    approve = run.step("approve")
    assert approve.status is StepStatus.FAILED
    assert approve.error is not None
    assert approve.error.type == "sagaline.errors.SagaCancelledError"
    assert "waited for signal approval" in approve.error.message
    assert rt.undone(saga_id) == ["prepare"]
    assert rt.calls.count("approve:action") == 1
    with pytest.raises(StateError, match="only a running saga takes signals"):
        rt.runtime.signals.send(saga_id, "approval", {"approver": "ana"})


def test_a_branch_that_waits_is_not_counted_as_a_saga_without_progress(
        rt: InProcess) -> None:
    """A group's branch waits while the other completes: however often the sweep looks,
    the saga is not failed for lack of progress; the signal completes it.
    """
    saga_id = rt.start(grouped)
    rt.run()
    assert rt.load(saga_id).step("webhook").status is StepStatus.WAITING
    for _ in range(8):  # more than max_recoveries
        assert rt.store.look_now(saga_id)
        rt.supervisor.recover()
        rt.run()

    receipt = rt.runtime.signals.send(saga_id, "paid", {"amount": "12.50"})
    rt.run()

    assert receipt.outcome == "delivered"
    run = rt.load(saga_id)
    assert run.status is SagaStatus.COMPLETED
    assert run.step("webhook").result == {"amount": "12.50"}
    assert run.recoveries == 0


@pytest.mark.parametrize(("name", "payload", "field"), [
    ("", {}, "name"),
    ("has space", {}, "name"),
    ("x" * 65, {}, "name"),
    ("approval", [1, 2], "payload"),
    ("approval", {"blob": "x" * 70_000}, "payload"),
    ("approval", {"when": object()}, "payload"),
])
def test_an_invalid_signal_names_its_field_and_keeps_nothing(
        rt: InProcess, name: str, payload: Any, field: str) -> None:
    """A bad name or payload is refused before anything is written."""
    saga_id = rt.start(approvals)
    with pytest.raises(InvalidSignalError) as raised:
        rt.runtime.signals.send(saga_id, name, payload)
    assert [e["field"] for e in raised.value.errors] == [field]
    assert "signal.received" not in [t.event for t in rt.load(saga_id).log]


def test_a_signal_to_no_saga_is_refused(rt: InProcess) -> None:
    """An unknown id is not found; nothing is written for it."""
    with pytest.raises(SagaNotFoundError):
        rt.runtime.signals.send("0190f5e8-7c3a-7b21-9d4e-5f6a7b8c9d0e", "approval", {})
    assert rt.client.keys(f"{rt.prefix}*") == []


def test_only_an_action_may_wait_and_only_for_a_while() -> None:
    """A compensation cannot wait; a timeout must be a positive duration."""
    undoing = StepContext(saga_id="s", saga_name="n", step="x", role=Role.COMPENSATION,
                          attempt=1, correlation_id="c")
    with pytest.raises(StateError, match="only a step's action can"):
        undoing.wait_for("approval", timeout=10)
    acting = StepContext(saga_id="s", saga_name="n", step="x", role=Role.ACTION, attempt=1,
                         correlation_id="c")
    for bad in (0, -1, float("inf"), timedelta(0)):
        with pytest.raises(ValueError, match="positive duration"):
            acting.wait_for("approval", timeout=bad)
    with pytest.raises(ValueError, match="signal name"):
        acting.signals("no spaces allowed")
