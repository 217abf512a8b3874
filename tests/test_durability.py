"""Durable sagas: cancellation, deadlines, lost messages, killed workers, and the operator's
tools. Real worker processes (killed with SIGKILL), a real Redis, real beat.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from sagaline import (
    Role,
    SagaCancelledError,
    Sagaline,
    SagaRun,
    SagaStatus,
    StepStatus,
    StuckSaga,
)
from tests.conftest import kill_group, start_beat, start_worker, stop_worker
from tests.test_order_saga import fresh_shop, order, rows, shipments_for

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
    helper = start_worker("late")  # started after the revoke: it never heard of it

    def refused() -> list[tuple[str | None, object]]:
        return [(t.step, t.detail.get("reason")) for t in engine.get(handle.saga_id).log
                if t.event == "action.duplicate"]

    try:
        wait_until(lambda: bool(refused()))  # the late worker took the message
    finally:
        stop_worker(helper)

    assert status is SagaStatus.CANCELLED
    run = engine.get(handle.saga_id)
    assert run.status is SagaStatus.CANCELLED
    assert refused() == [("first", "the saga is cancelled")]
    assert run.step("first").attempts == 0
    assert run.compensations == []
    assert not any(t.event.startswith("compensation.") for t in run.log)
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
    assert run.compensations == ["refund_payment", "release_inventory", "cancel_order"]
    assert [t.step for t in run.log if t.event == "compensation.completed"] == [
        "process_payment", "reserve_inventory", "create_order"]
    assert shipments_for(run) == []
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


@pytest.mark.usefixtures("main_worker_paused")
def test_stuck_lists_a_saga_whose_worker_died_mid_step_once_its_lease_ran_out(
    engine: Sagaline, calls: object
) -> None:
    """While its worker's heartbeat renews the lease, a long step is not stuck, even past
    the 2 s lease; SIGKILL the worker and, once the lease ran out, ``stuck`` lists the
    saga with the step it waits on, still recorded running.
    """
    victim = start_worker("lease-victim")
    try:
        handle = engine.start("t_long_step", {"tag": calls.tag})  # type: ignore[attr-defined]
        wait_until(lambda: "long:start" in calls.read())  # type: ignore[attr-defined]
        began = handle.get().step("long").started_at
        assert began is not None
        wait_until(lambda: time.time() > began.timestamp() + 3.0)  # past a lease, alive
        assert handle.saga_id not in [s.saga_id for s in engine.supervisor.stuck()]
    finally:
        kill_group(victim)

    def listed() -> dict[str, StuckSaga]:
        return {s.saga_id: s for s in engine.supervisor.stuck()}

    wait_until(lambda: handle.saga_id in listed())
    found = listed()[handle.saga_id]

    assert found.status is SagaStatus.RUNNING
    assert found.waiting_on == "action:long"
    assert found.overdue_s > 0
    assert found.deadline_at is None
    run = engine.get(handle.saga_id)
    assert run.step("long").status is StepStatus.RUNNING and run.step("long").attempts == 1
    assert calls.read() == ["long:start"]  # type: ignore[attr-defined]
    engine.cancel(handle.saga_id)


#: The recovery limit of the workers (and so of the sweeps) the poison tests start.
POISON_LIMIT = 2


def stop_poison(engine: Sagaline, saga_id: str) -> None:
    """Cancel a poison saga that did not end, so that no copy of its step message, wherever
    it is, runs the step again (on the session's worker, say): every claim refuses it.
    """
    if not engine.get(saga_id).is_final:
        engine.cancel(saga_id, "the test ended")


def check_given_up_after_the_limit(run: SagaRun, noted: list[str]) -> None:
    """The poison step failed with RecoveryExhaustedError after POISON_LIMIT recoveries and
    the saga was rolled back: the poison step, whose outcome is in doubt (its process died
    mid-step), undone first, then the step before it, each once.
    """
    assert run.status is SagaStatus.COMPENSATED
    assert run.failed_step == "poison"
    assert run.error is not None and run.error.type.endswith("RecoveryExhaustedError")
    assert run.error.message == f"poison made no progress after {POISON_LIMIT} recoveries"
    poison = run.step("poison")
    assert poison.status is StepStatus.FAILED
    assert poison.error is not None and poison.error.type.endswith("RecoveryExhaustedError")
    recoveries = [t for t in run.log if t.event == "saga.recovering"]
    assert [(t.detail["recovery"], t.detail["waiting_on"]) for t in recoveries] == [
        (n, "action:poison") for n in range(1, POISON_LIMIT + 2)]
    # Every attempt began, noted itself and died; then the rollback undid both steps.
    assert sorted(c for c in noted if c.startswith("poison:action")) == sorted(
        f"poison:action:{n}" for n in range(1, poison.attempts + 1))
    assert [c for c in noted if not c.startswith("poison:action")] == [
        "first:action", "poison:compensation", "first:compensation"]
    assert [t.step for t in run.log if t.event == "compensation.completed"] == [
        "poison", "first"]
    assert run.step("first").compensation.attempts == 1  # type: ignore[union-attr]


@pytest.mark.usefixtures("main_worker_paused")
def test_a_step_that_takes_its_worker_down_on_every_attempt_fails_after_the_recovery_limit(
    engine: Sagaline, calls: object
) -> None:
    """A poison step SIGKILLs its whole worker on every attempt (its message stays with
    the dead worker); a supervisor (this test) starts another each time. Each time the
    lease runs out, beat's sweep recovers the saga and sends the step again, at most
    SAGALINE_MAX_RECOVERIES times (2 on these workers); the recovery after that gives up:
    the step fails with RecoveryExhaustedError and the saga is compensated, recorded final.
    """
    env = {"SAGALINE_MAX_RECOVERIES": str(POISON_LIMIT)}
    workers = [start_worker("poisoned-0", env=env)]
    beat = start_beat()
    handle = engine.start("t_poison_worker", {"tag": calls.tag})  # type: ignore[attr-defined]
    try:
        deadline = time.monotonic() + 120
        while not handle.get().is_final:
            assert time.monotonic() < deadline, handle.get().log
            if workers[-1].poll() is not None:  # it went down with the step: start another
                try:
                    workers.append(start_worker(f"poisoned-{len(workers)}", env=env))
                except RuntimeError:  # it took the step before it answered, and went down
                    continue
            time.sleep(0.1)
        run = handle.get()
    finally:
        stop_poison(engine, handle.saga_id)
        kill_group(beat)
        for process in workers:
            kill_group(process)

    check_given_up_after_the_limit(run, calls.read())  # type: ignore[attr-defined]
    # One attempt from the start, at most one after each recovery but the last.
    assert 1 <= run.step("poison").attempts <= POISON_LIMIT + 1


@pytest.mark.usefixtures("main_worker_paused")
def test_a_step_that_kills_its_pool_process_on_every_attempt_fails_when_its_attempts_are_lost(
    engine: Sagaline, calls: object
) -> None:
    """A poison step SIGKILLs the worker's pool process running it, on every attempt (the
    worker lives on and gets the message back: Celery requeues a message whose process was
    lost). A lost attempt is run again at most SAGALINE_MAX_RECOVERIES (2) times: after the
    third attempt, the next claim refuses to start a fourth, the step fails with
    AttemptsLostError
    and the saga is rolled back: the poison step, whose outcome is in doubt, undone first,
    then the step before it, each once.
    """
    poisoned = start_worker("poisoned", env={"SAGALINE_MAX_RECOVERIES": str(POISON_LIMIT)})
    handle = engine.start("t_poison", {"tag": calls.tag})  # type: ignore[attr-defined]
    try:
        wait_until(lambda: handle.get().is_final or handle.get().step("poison").attempts > 3,
                   timeout=90, every=0.1)
        run = handle.get()
    finally:
        stop_poison(engine, handle.saga_id)
        kill_group(poisoned)

    poison = run.step("poison")
    assert poison.attempts == 3, f"{poison.attempts} attempts; the saga is {run.status.value}"
    assert run.status is SagaStatus.COMPENSATED
    assert run.failed_step == "poison"
    assert run.error is not None and run.error.type == "sagaline.errors.AttemptsLostError"
    assert "lost with its process on each of its 3 attempts" in run.error.message
    assert poison.status is StepStatus.FAILED
    noted = calls.read()  # type: ignore[attr-defined]
    assert [c for c in noted if c.startswith("poison:action")] == [
        f"poison:action:{n}" for n in (1, 2, 3)]
    assert [c for c in noted if not c.startswith("poison:action")] == [
        "first:action", "poison:compensation", "first:compensation"]


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
