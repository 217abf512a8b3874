"""Composing steps: parallel groups, fallbacks and pivots, on a real worker and Redis."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from sagaline import (
    NO_RETRY,
    DefinitionError,
    Fallback,
    FromInput,
    FromStep,
    Parallel,
    RetryPolicy,
    Saga,
    Sagaline,
    SagaRun,
    SagaStatus,
    Step,
    StepStatus,
)
from tests.conftest import start_worker, stop_worker
from tests.support.sagas import TAG, Tagged
from tests.support.steps import backup, fail, succeed, undo, undo_backup
from tests.test_durability import sweep_until_final

pytestmark = pytest.mark.usefixtures("worker")

BRANCHES = [f"b{i}" for i in range(1, 6)]


def intervals(run: SagaRun, names: list[str], *, undo: bool = False) -> list[tuple[float, float]]:
    """Recorded (start, end) of steps' actions, or of their compensations."""
    spans = []
    for name in names:
        step = run.step(name)
        record = step.compensation if undo else step
        assert record is not None and record.started_at and record.ended_at
        spans.append((record.started_at.timestamp(), record.ended_at.timestamp()))
    return spans


def most_at_once(spans: list[tuple[float, float]]) -> int:
    """The largest number of the spans that overlap at one moment."""
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    running = peak = 0
    for _, change in events:
        running += change
        peak = max(peak, running)
    return peak


# -- parallel groups ----------------------------------------------------------------------


def test_a_failing_branch_compensates_every_completed_branch_once_then_the_earlier_steps(
    engine: Sagaline, calls: Any
) -> None:
    """Twenty runs of a five-branch group whose third branch fails, all at once: in each,
    every branch that completed (before or after the failure) is compensated exactly once,
    the branches' compensations come before those of the earlier steps, which run in
    reverse, and no branch's record is lost.
    """
    tags = [f"{calls.tag}-{i}" for i in range(20)]

    handles = [engine.start("t_fan_out", {"tag": tag}) for tag in tags]
    runs = [h.wait(120) for h in handles]

    for tag, run in zip(tags, runs, strict=True):
        noted = list(engine.store.client.lrange(f"sagaline-test:calls:{tag}", 0, -1))
        completed = {b for b in BRANCHES if run.step(b).status is StepStatus.COMPLETED}
        ran_ok = {b for b in BRANCHES if f"{b}:action" in noted and b != "b3"}
        assert run.status is SagaStatus.COMPENSATED, run.saga_id
        assert run.failed_step == "b3"
        assert ran_ok == completed, f"a branch that ran lost its record in {run.saga_id}"
        undone = [c.split(":")[0] for c in noted if c.endswith(":compensation")]
        assert sorted(undone) == sorted([*completed, "second", "first"])  # once each
        assert undone[-2:] == ["second", "first"]
        assert "after:action" not in noted
        failed_undo = run.step("b3").compensation
        assert failed_undo is None or failed_undo.status is not StepStatus.COMPLETED
        assert len(run.compensations) == len(completed) + 2


def test_several_failing_branches_fail_the_saga_once(engine: Sagaline, calls: Any) -> None:
    """Three of five branches fail (b1 and b5 by injected faults, b3 on its own): the saga
    turns compensating once, and every completed branch is undone once.
    """
    engine.store.inject_fault("t_fan_out", "b1")
    engine.store.inject_fault("t_fan_out", "b5")

    run = engine.start("t_fan_out", {"tag": calls.tag}).wait(30)

    assert run.status is SagaStatus.COMPENSATED
    assert [t.event for t in run.log].count("saga.failed") == 1
    completed = {b for b in BRANCHES if run.step(b).status is StepStatus.COMPLETED}
    assert completed <= {"b2", "b4"}
    undone = [c.split(":")[0] for c in calls.read() if c.endswith(":compensation")]
    assert sorted(undone[:-2]) == sorted(completed)
    assert undone[-2:] == ["second", "first"]


def test_branches_in_flight_when_cancelled_are_awaited_and_compensated(
    engine: Sagaline, calls: Any
) -> None:
    """Both branches sleep 1.5 s; the saga is cancelled while they run. Neither is stopped
    (they do not look at ctx.cancelled()); each completes after all and is compensated,
    then the step before the group; the step after the group never runs.
    """
    from tests.test_durability import wait_until

    handle = engine.start("t_slow_branches", {"tag": calls.tag})
    wait_until(lambda: {"s1:start", "s2:start"} <= set(calls.read()))

    engine.cancel(handle.saga_id)
    run = handle.wait(30)

    assert run.status is SagaStatus.CANCELLED
    noted = calls.read()
    assert sorted(noted[-3:-1]) == ["s1:compensation", "s2:compensation"]
    assert noted[-1] == "first:compensation"
    assert noted.count("s1:compensation") == noted.count("s2:compensation") == 1
    for branch in ("s1", "s2"):  # not stopped: it ran to its end, then was undone
        assert noted.count(f"{branch}:end") == 1
        assert noted.index(f"{branch}:end") < noted.index(f"{branch}:compensation")
        assert run.step(branch).status is StepStatus.COMPLETED
        assert run.step(branch).attempts == 1
    assert sorted(noted) == sorted([
        "first:action", "s1:start", "s2:start", "s1:end", "s2:end", "s1:compensation",
        "s2:compensation", "first:compensation"])
    assert "after:action" not in noted
    assert run.step("after").status is StepStatus.PENDING


def test_compensations_of_a_group_run_in_parallel_before_the_earlier_steps(
    engine: Sagaline, calls: Any
) -> None:
    """Three branches whose compensations take two seconds each: at least two of them run
    at once (the worker has two processes), all end before the step before the group is
    undone.
    """
    run = engine.start("t_fan_out_slow_undo", {"tag": calls.tag}).wait(60)

    assert run.status is SagaStatus.COMPENSATED
    branch_undo = intervals(run, ["b1", "b2", "b3"], undo=True)
    assert most_at_once(branch_undo) >= 2
    first_undo = intervals(run, ["first"], undo=True)[0]
    assert max(end for _, end in branch_undo) <= first_undo[0]
    noted = calls.read()
    assert noted[-1] == "first:compensation"
    assert noted.count("first:compensation") == 1
    for branch in ("b1", "b2", "b3"):
        assert noted.count(f"{branch}:undo:start") == 1


@pytest.fixture
def second_worker(worker: Any) -> Iterator[None]:
    """Two more worker processes, so that more branches could run than the bound allows."""
    process = start_worker("extra", concurrency=2)
    yield
    stop_worker(process)


@pytest.mark.usefixtures("second_worker")
def test_the_concurrency_bound_holds_and_a_branch_result_feeds_a_later_step(
    engine: Sagaline, calls: Any
) -> None:
    """Five two-second branches bounded to two at once, on four worker processes: from the
    recorded start and end times, two run together and never more; the step after the
    group reads a branch's result.
    """
    run = engine.start("t_bounded", {"tag": calls.tag}).wait(60)

    assert run.status is SagaStatus.COMPLETED
    spans = intervals(run, [f"p{i}" for i in range(1, 6)])
    assert most_at_once(spans) == 2
    assert run.step("use").result == {"echo": 2}
    assert run.result == {"use": {"echo": 2}, "p1": {"slept": 2}}
    starts = sorted(s for s, _ in spans)
    ends = sorted(e for _, e in spans)
    # The third branch starts only once one of the first two ended.
    assert starts[2] >= ends[0]


@pytest.mark.usefixtures("main_worker_paused")
def test_a_group_whose_branch_messages_were_lost_is_driven_on_by_the_sweep(
    engine: Sagaline, calls: Any
) -> None:
    """No worker takes messages; the two branch messages the group sent are deleted from
    the broker. The recovery sweep reads the group's record, sends the branches in flight
    again, and the bound and the rest of the saga go on as usual: each branch runs once.
    """
    handle = engine.start("t_bounded", {"tag": calls.tag})
    assert engine.store.client.llen("celery") == 2  # two branches, as the bound allows
    assert engine.store.client.delete("celery") == 1
    helper = start_worker("sweeper")
    try:
        run = sweep_until_final(engine, handle.saga_id)
    finally:
        stop_worker(helper)

    assert run.status is SagaStatus.COMPLETED
    noted = calls.read()
    assert sorted(noted) == sorted(
        [f"p{i}:{x}" for i in range(1, 6) for x in ("start", "end")] + ["use:action"])
    assert most_at_once(intervals(run, [f"p{i}" for i in range(1, 6)])) <= 2
    assert any(t.event == "saga.recovering" for t in run.log)


def test_a_saga_ending_in_a_group_completes_with_every_branch_result(
    engine: Sagaline, calls: Any
) -> None:
    run = engine.start("t_ends_in_group", {"tag": calls.tag}).wait(30)

    assert run.status is SagaStatus.COMPLETED
    assert set(run.result) == {"x", "y"}
    assert [t.event for t in run.log].count("group.completed") == 1
    assert [t.event for t in run.log].count("saga.completed") == 1


def test_a_group_is_checked_when_declared() -> None:
    with pytest.raises(DefinitionError, match="at least two steps"):
        Parallel("alone", [Step("one", succeed, args=TAG)])
    with pytest.raises(DefinitionError, match="max_concurrency must be at least 1"):
        Parallel("g", [Step("a", succeed, args=TAG), Step("b", succeed, args=TAG)],
                 max_concurrency=0)
    with pytest.raises(DefinitionError, match="result of 'sibling', which is not an earlier step"):
        Saga("t_bad_group", inputs=Tagged, steps=[Parallel("g", [
            Step("sibling", succeed, args=TAG),
            Step("b", succeed, args={"tag": FromStep("sibling", "step")}),
        ])])


# -- fallbacks ------------------------------------------------------------------------------


def test_a_fallback_takes_over_when_the_action_gives_up_and_the_saga_goes_on(
    engine: Sagaline, calls: Any
) -> None:
    run = engine.start("t_with_fallback", {"tag": calls.tag}).wait(30)

    assert run.status is SagaStatus.COMPLETED
    assert calls.read() == ["first:action", "pay:action", "pay:fallback", "later:action"]
    pay = run.step("pay")
    assert pay.status is StepStatus.FAILED
    assert pay.fallback is not None and pay.fallback.status is StepStatus.COMPLETED
    assert pay.fallback.task == "testing.backup"
    assert run.step("later").result == {"echo": "backup"}
    assert [t.event for t in run.log if t.step == "pay"][:4] == [
        "action.started", "action.failed", "fallback.due", "fallback.started"]


def test_a_later_failure_undoes_the_fallback_with_its_own_compensation(
    engine: Sagaline, calls: Any
) -> None:
    engine.store.inject_fault("t_with_fallback", "later")

    run = engine.start("t_with_fallback", {"tag": calls.tag}).wait(30)

    assert run.status is SagaStatus.COMPENSATED
    assert run.failed_step == "later"
    assert calls.read() == ["first:action", "pay:action", "pay:fallback", "pay:undo_backup",
                            "first:compensation"]
    assert run.compensations == ["undo_backup", "undo"]
    undo_pay = run.step("pay").compensation
    assert undo_pay is not None
    assert undo_pay.result == {"undone": f"{run.saga_id}:pay:fallback"}


def test_when_the_fallback_fails_too_the_saga_is_compensated(
    engine: Sagaline, calls: Any
) -> None:
    engine.store.inject_fault("t_with_fallback", "pay", role=_fallback_role(),
                              message="backup declined")

    run = engine.start("t_with_fallback", {"tag": calls.tag}).wait(30)

    assert run.status is SagaStatus.COMPENSATED
    assert run.failed_step == "pay"
    assert run.error is not None and run.error.message == "pay failed on purpose"
    fallback = run.step("pay").fallback
    assert fallback is not None and fallback.status is StepStatus.FAILED
    assert fallback.error is not None and fallback.error.message == "backup declined"
    assert calls.read() == ["first:action", "pay:action", "first:compensation"]


def _fallback_role() -> Any:
    from sagaline import Role

    return Role.FALLBACK


# -- pivots ---------------------------------------------------------------------------------


def test_after_a_pivot_a_failing_step_is_retried_forward(engine: Sagaline, calls: Any) -> None:
    engine.store.inject_fault("t_with_pivot", "after", times=2)

    run = engine.start("t_with_pivot", {"tag": calls.tag}).wait(30)

    assert run.status is SagaStatus.COMPLETED
    assert run.step("after").attempts == 3
    assert calls.read() == ["first:action", "send_email:action", "after:action"]


def test_a_step_giving_up_after_a_pivot_never_compensates_and_needs_an_operator(
    engine: Sagaline, calls: Any
) -> None:
    engine.store.inject_fault("t_with_pivot", "after", message="mail server gone")

    run = engine.start("t_with_pivot", {"tag": calls.tag}).wait(30)

    assert run.status is SagaStatus.NEEDS_ATTENTION
    assert run.failed_step == "after"
    assert run.step("after").attempts == 3
    assert run.compensations == []
    assert calls.read() == ["first:action", "send_email:action"]
    assert not any(t.event.startswith("compensation.") for t in run.log)
    assert run.log[-1].event == "saga.needs_attention"
    assert run.log[-1].detail["pivot"] == "send_email"
    stuck = {s.saga_id: s for s in engine.supervisor.stuck()}
    assert stuck[run.saga_id].status is SagaStatus.NEEDS_ATTENTION
    assert engine.cancel(run.saga_id) is SagaStatus.NEEDS_ATTENTION


def test_an_operator_resumes_a_saga_past_its_pivot_once_the_cause_is_fixed(
    engine: Sagaline, calls: Any
) -> None:
    engine.store.inject_fault("t_with_pivot", "after", message="mail server gone")
    handle = engine.start("t_with_pivot", {"tag": calls.tag})
    assert handle.wait(30).status is SagaStatus.NEEDS_ATTENTION
    engine.store.clear_faults()

    assert engine.supervisor.resume(handle.saga_id) == "resumed"
    run = handle.wait(30)

    assert run.status is SagaStatus.COMPLETED
    assert calls.read() == ["first:action", "send_email:action", "after:action"]
    assert run.step("after").attempts == 4  # three that gave up, then one after the fix
    assert [t.event for t in run.log].count("saga.resumed") == 1
    assert run.compensations == []


def test_a_failure_before_the_pivot_completed_still_compensates(
    engine: Sagaline, calls: Any
) -> None:
    engine.store.inject_fault("t_with_pivot", "send_email")

    run = engine.start("t_with_pivot", {"tag": calls.tag}).wait(30)

    assert run.status is SagaStatus.COMPENSATED
    assert run.compensations == ["undo"]


def test_a_step_after_a_pivot_that_cannot_be_retried_is_refused_when_declared() -> None:
    with pytest.raises(DefinitionError) as refused:
        Saga("t_bad_pivot", inputs=Tagged, steps=[
            Step("send_email", succeed, args=TAG, pivot=True),
            Step("after", succeed, args=TAG, retry=NO_RETRY),
        ])
    message = str(refused.value)
    assert "'after' comes after the pivot 'send_email'" in message
    assert "attempts > 1" in message
    with pytest.raises(DefinitionError, match="is a pivot, which cannot be undone"):
        Step("send_email", succeed, compensation=undo, args=TAG, pivot=True)
    with pytest.raises(DefinitionError, match="non_retryable"):
        Saga("t_bad_pivot", inputs=Tagged, retry=RetryPolicy(
            attempts=5, initial=timedelta(milliseconds=1), non_retryable=(KeyError,)), steps=[
            Step("send_email", succeed, args=TAG, pivot=True),
            Step("after", succeed, args=TAG),
        ])


def test_a_fallback_is_checked_like_a_step() -> None:
    with pytest.raises(DefinitionError, match=r"\(fallback\).*takes no argument 'nope'"):
        Saga("t_bad_fallback", inputs=Tagged, steps=[
            Step("pay", fail, args=TAG,
                 fallback=Fallback(backup, compensation=undo_backup,
                                   args={**TAG, "nope": FromInput("tag")})),
        ])



# -- nested sagas -----------------------------------------------------------------------------


def child_of(engine: Sagaline, run: SagaRun) -> SagaRun:
    child_id = run.step("child").child
    assert child_id is not None
    return engine.get(child_id)


def test_a_step_runs_a_child_saga_and_the_parent_goes_on_with_its_result(
    engine: Sagaline, calls: Any
) -> None:
    run = engine.start("t_parent", {"tag": calls.tag}).wait(30)

    assert run.status is SagaStatus.COMPLETED
    assert calls.read() == ["p1:action", "c1:action", "c2:action", "p3:action"]
    child = child_of(engine, run)
    assert child.status is SagaStatus.COMPLETED
    assert child.parent_id == run.saga_id
    assert child.correlation_id == run.correlation_id
    assert run.step("p3").result == {"echo": "c2"}
    assert [t.event for t in run.log if t.step == "child"] == [
        "action.started", "action.waiting", "action.completed"]


def test_a_parent_failing_after_its_child_completed_rolls_the_child_back_first(
    engine: Sagaline, calls: Any
) -> None:
    engine.store.inject_fault("t_parent", "p3")

    run = engine.start("t_parent", {"tag": calls.tag}).wait(30)

    assert run.status is SagaStatus.COMPENSATED
    assert calls.read() == ["p1:action", "c1:action", "c2:action",
                            "c2:compensation", "c1:compensation", "p1:compensation"]
    child = child_of(engine, run)
    assert child.status is SagaStatus.COMPENSATED
    assert child.compensations == ["undo", "undo"]
    undo_child = run.step("child").compensation
    assert undo_child is not None and undo_child.status is StepStatus.COMPLETED


def test_a_failing_child_fails_the_parent_step_and_the_parent_undoes_its_own_steps(
    engine: Sagaline, calls: Any
) -> None:
    engine.store.inject_fault("t_child", "c2", message="child step down")

    run = engine.start("t_parent", {"tag": calls.tag}).wait(30)

    assert run.status is SagaStatus.COMPENSATED
    assert run.failed_step == "child"
    assert calls.read() == ["p1:action", "c1:action", "c1:compensation", "p1:compensation"]
    assert child_of(engine, run).status is SagaStatus.COMPENSATED
    assert run.error is not None
    assert run.error.details["child_error"]["message"] == "child step down"
    assert run.compensations == ["undo"]


def test_cancelling_a_parent_stops_its_running_child_and_undoes_both(
    engine: Sagaline, calls: Any
) -> None:
    """The child's long step stops at ctx.raise_if_cancelled(); the child undoes its first
    step and ends cancelled, which fails the parent's step; the parent undoes its own.
    """
    from tests.test_durability import wait_until

    handle = engine.start("t_parent_of_slow", {"tag": calls.tag})
    wait_until(lambda: "long:start" in calls.read())

    engine.cancel(handle.saga_id)
    run = handle.wait(30)

    assert run.status is SagaStatus.CANCELLED
    assert child_of(engine, run).status is SagaStatus.CANCELLED
    assert calls.read() == ["p1:action", "c1:action", "long:start", "c1:compensation",
                            "p1:compensation"]
    assert run.step("child").status is StepStatus.FAILED


@pytest.mark.usefixtures("main_worker_paused")
def test_a_worker_with_one_process_runs_a_parent_and_its_child(
    engine: Sagaline, calls: Any
) -> None:
    """The parent does not wait inside a task, so one worker process is enough."""
    solo = start_worker("solo", concurrency=1)
    try:
        run = engine.start("t_parent", {"tag": calls.tag}).wait(30)
    finally:
        stop_worker(solo)

    assert run.status is SagaStatus.COMPLETED
    assert calls.read() == ["p1:action", "c1:action", "c2:action", "p3:action"]


# -- dynamic sagas ----------------------------------------------------------------------------


def test_steps_a_result_adds_run_after_it_and_are_compensated_in_reverse(
    engine: Sagaline, calls: Any
) -> None:
    engine.store.inject_fault("t_dynamic", "last")

    run = engine.start("t_dynamic", {"tag": calls.tag}).wait(30)

    assert run.status is SagaStatus.COMPENSATED
    assert [s.name for s in run.steps] == ["first", "plan", "dyn_1", "dyn_2", "last"]
    assert calls.read() == ["first:action", "plan:action", "dyn_1:action", "dyn_2:start",
                            "dyn_2:end", "dyn_2:compensation", "dyn_1:compensation",
                            "first:compensation"]
    assert run.compensations == ["undo", "undo", "undo"]
    assert [t.event for t in run.log].count("saga.steps_added") == 1


@pytest.mark.usefixtures("main_worker_paused")
def test_added_steps_survive_a_worker_killed_while_one_runs(
    engine: Sagaline, calls: Any
) -> None:
    """SIGKILL the only worker while an added step runs; a new worker (which never saw
    the step being added) runs it again from the record, and the rollback undoes it.
    """
    from tests.conftest import kill_group
    from tests.test_durability import wait_until

    engine.store.inject_fault("t_dynamic", "last")
    victim = start_worker("victim")
    handle = engine.start("t_dynamic", {"tag": calls.tag})
    wait_until(lambda: "dyn_2:start" in calls.read())
    kill_group(victim)
    survivor = start_worker("survivor")
    try:
        run = sweep_until_final(engine, handle.saga_id)
    finally:
        stop_worker(survivor)

    assert run.status is SagaStatus.COMPENSATED
    assert calls.read() == ["first:action", "plan:action", "dyn_1:action", "dyn_2:start",
                            "dyn_2:start", "dyn_2:end", "dyn_2:compensation",
                            "dyn_1:compensation", "first:compensation"]
    assert run.step("dyn_2").attempts == 2


def test_a_saga_assembled_at_runtime_runs_on_workers_that_never_declared_it(
    engine: Sagaline, calls: Any
) -> None:
    """A builder adds steps on conditions; the workers know only its tasks: they read the
    saga recorded with the run. A failure undoes what the conditions added, in reverse.
    """
    from sagaline import SagaBuilder

    def assemble(with_gift: bool) -> Saga:
        builder = SagaBuilder("t_assembled", inputs=Tagged)
        builder.add(Step("account", succeed, compensation=undo, args=TAG))
        if with_gift:
            builder.add(Step("gift", succeed, compensation=undo, args=TAG))
        builder.add(Step("welcome", succeed, compensation=undo, args=TAG, retry=NO_RETRY))
        return builder.build()

    plain = engine.start(assemble(False), {"tag": f"{calls.tag}-plain"}).wait(30)
    engine.store.inject_fault("t_assembled", "welcome")
    gifted = engine.start(assemble(True), {"tag": calls.tag}).wait(30)

    assert plain.status is SagaStatus.COMPLETED
    assert [s.name for s in plain.steps] == ["account", "welcome"]
    assert gifted.status is SagaStatus.COMPENSATED
    assert calls.read() == ["account:action", "gift:action", "gift:compensation",
                            "account:compensation"]
