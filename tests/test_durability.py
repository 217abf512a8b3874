"""Durable sagas: cancellation, deadlines, lost messages, killed workers, and the operator's
tools. Real worker processes (killed with SIGKILL), a real Redis, real beat.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from sagaline import Role, SagaCancelledError, Sagaline, SagaRun, SagaStatus, StepStatus
from tests.conftest import kill_group, start_beat, start_worker, stop_worker
from tests.test_order_saga import fresh_shop, order, rows

pytestmark = pytest.mark.usefixtures("worker")


def wait_until(check: Callable[[], bool], timeout: float = 20.0, every: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("the condition did not hold in time")
        time.sleep(every)


def sweep_until_final(engine: Sagaline, saga_id: str, timeout: float = 60.0) -> SagaRun:
    """Run the recovery sweep by hand (as ``sagaline recover`` does) until the saga ends."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        engine.supervisor.recover()
        run = engine.get(saga_id)
        if run.is_final:
            return run
        time.sleep(0.3)
    raise AssertionError(f"saga {saga_id} did not end: {engine.get(saga_id).status}")


# -- cancellation ---------------------------------------------------------------------------


@pytest.mark.usefixtures("main_worker_paused")
def test_cancelling_before_the_first_step_starts_ends_cancelled_and_nothing_runs(
    engine: Sagaline, calls: object
) -> None:
    """The first message is still queued: the saga ends cancelled at once, and when a worker
    takes the message later it is dropped (revoked, and refused by the claim).
    """
    handle = engine.start("t_cancellable", {"tag": calls.tag})  # type: ignore[attr-defined]

    status = engine.cancel(handle.saga_id)
    helper = start_worker("late")
    try:
        time.sleep(1.0)
    finally:
        stop_worker(helper)

    assert status is SagaStatus.CANCELLED
    run = engine.get(handle.saga_id)
    assert run.status is SagaStatus.CANCELLED
    assert run.compensations == []
    assert calls.read() == []  # type: ignore[attr-defined]


def test_cancelling_during_a_cooperative_long_step_stops_it_and_undoes_the_earlier_ones(
    engine: Sagaline, calls: object
) -> None:
    """The long step checks for cancellation, stops, and is not compensated (it did not
    complete); the completed first step is; the step after never starts.
    """
    handle = engine.start("t_cancellable", {"tag": calls.tag})  # type: ignore[attr-defined]
    wait_until(lambda: "long:start" in calls.read())  # type: ignore[attr-defined]

    started = time.monotonic()
    engine.cancel(handle.saga_id, "the customer changed their mind")
    run = handle.wait(30)

    assert time.monotonic() - started < 5  # it did not work its 10 s
    assert run.status is SagaStatus.CANCELLED
    assert calls.read() == ["first:action", "long:start", "first:compensation"]  # type: ignore[attr-defined]
    assert run.compensations == ["undo"]
    long = run.step("long")
    assert long.status is StepStatus.FAILED
    assert long.error is not None and long.error.type.endswith(SagaCancelledError.__name__)
    assert long.compensation is not None and long.compensation.status is StepStatus.SKIPPED
    assert run.step("after").status is StepStatus.PENDING
    assert run.error is not None and run.error.message == "the customer changed their mind"


def test_a_step_in_flight_when_cancelled_is_compensated_if_it_completes_after_all(
    engine: Sagaline, calls: object
) -> None:
    """A step that does not check for cancellation completes; its compensation then runs
    first, then the earlier step's: strict reverse order.
    """
    handle = engine.start("t_not_cooperative", {"tag": calls.tag})  # type: ignore[attr-defined]
    wait_until(lambda: "slow:start" in calls.read())  # type: ignore[attr-defined]

    assert engine.cancel(handle.saga_id) is SagaStatus.COMPENSATING
    run = handle.wait(30)

    assert run.status is SagaStatus.CANCELLED
    assert calls.read() == [  # type: ignore[attr-defined]
        "first:action", "slow:start", "slow:end", "slow:compensation", "first:compensation",
    ]
    assert run.compensations == ["undo", "undo"]
    assert [t.step for t in run.log if t.event == "compensation.completed"] == ["slow", "first"]


def test_cancelling_a_completed_saga_changes_nothing(engine: Sagaline, calls: object) -> None:
    run = engine.start("t_slow_start", {"tag": calls.tag}).wait(30)  # type: ignore[attr-defined]

    assert engine.cancel(run.saga_id) is SagaStatus.COMPLETED
    assert engine.get(run.saga_id).status is SagaStatus.COMPLETED
    assert not any(t.event.startswith("compensation") for t in engine.get(run.saga_id).log)


def test_cancelling_an_order_undoes_every_completed_step_in_the_store(engine: Sagaline) -> None:
    """Cancelled while create_shipment waits for its retry: payment, stock and order are
    undone, and the saga ends cancelled.
    """
    customer, product = fresh_shop(stock=10, balance_cents=50_000)
    engine.store.inject_fault("order_processing", "create_shipment", times=2)
    handle = engine.start("order_processing", order(customer, product, 2, "99.99"))
    wait_until(lambda: any(t.event == "action.retrying" for t in handle.get().log))

    engine.cancel(handle.saga_id)
    run = handle.wait(30)

    assert run.status is SagaStatus.CANCELLED
    assert run.compensations[-3:] == ["refund_payment", "release_inventory", "cancel_order"]
    assert rows(customer, product) == {"stock": 10, "balance": 50_000, "orders": ["cancelled"],
                                       "payments": ["refunded"], "reservations": [True]}


def test_stop_cancels_every_running_saga_of_a_correlation_id(
    engine: Sagaline, calls: object
) -> None:
    """As Thunderline's Supervisor.stop_saga(correlation_id)."""
    first = engine.start("t_cancellable", {"tag": calls.tag})  # type: ignore[attr-defined]
    second = engine.start("t_cancellable", {"tag": calls.tag},  # type: ignore[attr-defined]
                          correlation_id=first.correlation_id)
    wait_until(lambda: calls.read().count("long:start") == 2)  # type: ignore[attr-defined]
    assert {r.saga_id for r in engine.supervisor.list_active()} >= {first.saga_id,
                                                                    second.saga_id}

    stopped = engine.supervisor.stop(first.correlation_id)

    assert set(stopped) == {first.saga_id, second.saga_id}
    assert first.wait(30).status is SagaStatus.CANCELLED
    assert second.wait(30).status is SagaStatus.CANCELLED


# -- deadlines and lost messages ----------------------------------------------------------


def test_a_saga_past_its_deadline_is_compensated(engine: Sagaline, calls: object) -> None:
    """A 1 s deadline, a 3 s step: the sweep stops the saga; the step in flight completes and
    is compensated, then the first; the saga ends compensated with a deadline error.
    """
    handle = engine.start("t_with_deadline", {"tag": calls.tag})  # type: ignore[attr-defined]
    wait_until(lambda: "slow:start" in calls.read())  # type: ignore[attr-defined]
    time.sleep(1.0)

    run = sweep_until_final(engine, handle.saga_id)

    assert run.status is SagaStatus.COMPENSATED
    assert run.error is not None and run.error.type.endswith("DeadlineExceededError")
    assert calls.read() == [  # type: ignore[attr-defined]
        "first:action", "slow:start", "slow:end", "slow:compensation", "first:compensation",
    ]
    assert run.step("after").status is StepStatus.PENDING


@pytest.mark.usefixtures("main_worker_paused")
def test_a_saga_whose_chain_message_was_deleted_is_found_by_beat_and_finished(
    engine: Sagaline, calls: object
) -> None:
    """No worker takes messages; the saga's first message is deleted from the broker. A real
    celery beat sends the sweep; once the hand-off time passed, it re-enqueues the step.
    """
    handle = engine.start("t_slow_start", {"tag": calls.tag})  # type: ignore[attr-defined]
    assert engine.store.client.delete("celery") == 1  # the queued chain message is gone
    beat = start_beat()
    helper = start_worker("sweeper")
    try:
        run = handle.wait(60)
    finally:
        stop_worker(helper)
        kill_group(beat)

    assert run.status is SagaStatus.COMPLETED
    assert calls.read() == ["slow:start", "slow:end", "after:action"]  # type: ignore[attr-defined]
    assert [t.event for t in run.log].count("saga.recovering") == 1


def test_a_long_step_keeps_its_lease_by_heartbeat_and_is_never_taken_over(
    engine: Sagaline, calls: object
) -> None:
    """A 5 s step under a 2 s lease, with the sweep running all along: the heartbeat renews
    the lease, so the sweep never recovers the saga and the step runs once.
    """
    handle = engine.start("t_long_step", {"tag": calls.tag})  # type: ignore[attr-defined]
    wait_until(lambda: "long:start" in calls.read())  # type: ignore[attr-defined]

    run = sweep_until_final(engine, handle.saga_id)

    assert run.status is SagaStatus.COMPLETED
    assert run.step("long").attempts == 1
    assert not any(t.event == "saga.recovering" for t in run.log)
    assert calls.read() == ["long:start", "long:end"]  # type: ignore[attr-defined]


def test_stuck_lists_a_saga_past_its_hand_off_with_the_step_it_waits_on(
    engine: Sagaline, calls: object, main_worker_paused: None
) -> None:
    """With no worker taking messages, a started saga waits on its first step; once the
    hand-off time passed, ``stuck`` lists it.
    """
    handle = engine.start("t_slow_start", {"tag": calls.tag})  # type: ignore[attr-defined]
    assert handle.saga_id not in [s.saga_id for s in engine.supervisor.stuck()]
    time.sleep(5.5)

    stuck = {s.saga_id: s for s in engine.supervisor.stuck()}

    assert handle.saga_id in stuck
    assert stuck[handle.saga_id].status is SagaStatus.RUNNING
    assert stuck[handle.saga_id].waiting_on == "action:slow"
    assert stuck[handle.saga_id].overdue_s > 0
    engine.cancel(handle.saga_id)


# -- killed workers ---------------------------------------------------------------------------


@pytest.mark.usefixtures("main_worker_paused")
def test_a_worker_killed_during_a_compensation_completes_it_once_after_recovery(
    engine: Sagaline, calls: object
) -> None:
    """SIGKILL the worker (all its processes) in the middle of a 3 s compensation; start a
    new one; the sweep finds the lease expired and the compensation runs again, to its end,
    once. Prints how long recovery took.
    """
    victim = start_worker("victim")
    handle = engine.start("t_slow_rollback", {"tag": calls.tag})  # type: ignore[attr-defined]
    wait_until(lambda: "first:undo:start" in calls.read())  # type: ignore[attr-defined]
    killed_at = time.time()
    kill_group(victim)
    survivor = start_worker("survivor")
    try:
        run = sweep_until_final(engine, handle.saga_id)
    finally:
        stop_worker(survivor)

    assert run.status is SagaStatus.COMPENSATED
    assert calls.read() == [  # type: ignore[attr-defined]
        "first:action", "second:action", "first:undo:start", "first:undo:start",
        "first:undo:end",
    ]
    undo = run.step("first").compensation
    assert undo is not None and undo.attempts == 2 and undo.status is StepStatus.COMPLETED
    restarted = undo.attempt_times[1].timestamp() - killed_at
    print(f"\nrecovery: the compensation restarted {restarted:.1f} s after SIGKILL "
          "(lease 2 s, sweep every 0.3 s, worker start included)")
    assert restarted < 30


# -- the operator's tools -------------------------------------------------------------------


def test_retry_compensation_after_a_fix_runs_only_what_was_left(engine: Sagaline) -> None:
    """refund_payment keeps failing: the saga ends compensation_failed and a dead letter
    names it. Once the cause is fixed, retry_compensation runs the refund once more and
    nothing else; the saga ends compensated and the books balance.
    """
    customer, product = fresh_shop(stock=10, balance_cents=50_000)
    engine.store.inject_fault("order_processing", "create_shipment")
    engine.store.inject_fault("order_processing", "process_payment", Role.COMPENSATION,
                              message="payment provider down")
    run = engine.start("order_processing", order(customer, product, 2, "99.99")).wait(60)
    assert run.status is SagaStatus.COMPENSATION_FAILED
    letters = [d for d in engine.supervisor.dead_letters() if d.saga_id == run.saga_id]
    assert [(d.step, d.attempts, d.error.message) for d in letters] == [
        ("process_payment", 5, "payment provider down")
    ]

    engine.store.clear_faults()  # the operator fixed the provider
    retried = engine.supervisor.retry_compensation(run.saga_id)
    after = engine.wait(run.saga_id, 30)

    assert retried == ["process_payment"]
    assert after.status is SagaStatus.COMPENSATED
    assert after.compensations == ["release_inventory", "cancel_order", "refund_payment"]
    assert after.step("process_payment").compensation.attempts == 6  # type: ignore[union-attr]
    assert after.step("reserve_inventory").compensation.attempts == 1  # type: ignore[union-attr]
    assert after.step("create_order").compensation.attempts == 1  # type: ignore[union-attr]
    assert rows(customer, product)["balance"] == 50_000
    assert not [d for d in engine.supervisor.dead_letters() if d.saga_id == run.saga_id]


def test_retry_compensation_is_refused_for_a_saga_that_did_not_fail_its_undo(
    engine: Sagaline, calls: object
) -> None:
    from sagaline import StateError

    run = engine.start("t_slow_start", {"tag": calls.tag}).wait(30)  # type: ignore[attr-defined]
    with pytest.raises(StateError, match="only a compensation_failed saga"):
        engine.supervisor.retry_compensation(run.saga_id)
