"""UPM activation (Bolt → Crown → Block) end to end, on SQLite and on PostgreSQL: a real
worker, real Redis, the family's snapshots and adapters read back from the database.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from sqlalchemy.exc import IntegrityError

from sagaline import RedisStore, SagaRun, SagaStatus, StateError, StepStatus
from tasks.block.models import ACTIVE, ARCHIVED, SHADOW, SnapshotActivation, UpmSnapshot
from tasks.crown.models import Approval, ApprovalRule, DriftLimit, FreezeWindow
from tasks.crown.policies import approve
from tasks.db import utcnow
from tests.support.thunderline import Backend, Family, add_shadow, family_state, new_family

SAGA = "upm_activation"

#: For a failure at each step: the compensations that run, in order (never the failed
#: step's own).
UNDONE_WHEN_FAILING = {
    "load_snapshot": [],
    "validate_drift": [],
    "policy_check": [],
    "deactivate_previous": [],
    "activate_snapshot": ["restore_previous"],
    "sync_adapters": ["revert_to_shadow", "restore_previous"],
    "emit_activation_event": ["restore_adapters", "revert_to_shadow", "restore_previous"],
}


def activate(backend: Backend, snapshot_id: str, **inputs: float) -> SagaRun:
    return backend.engine.start(SAGA, {"snapshot_id": snapshot_id, **inputs}).wait(timeout=60)


def test_a_shadow_snapshot_is_activated_and_the_adapters_move_onto_it(backend: Backend
                                                                      ) -> None:
    """The old active snapshot is archived, the new one active, every adapter points at it
    with the snapshot's configuration merged into its own, and the family is free again.
    """
    family = new_family(backend.db)
    run = activate(backend, family.shadow)
    assert run.status is SagaStatus.COMPLETED, run.error
    assert run.result == {"snapshot_id": family.shadow, "family": family.name,
                          "adapters": [f"{family.name}-adapter-1", f"{family.name}-adapter-2"]}
    state = family_state(backend.db, family)
    assert state["snapshots"] == {family.active: ARCHIVED, family.shadow: ACTIVE}
    assert state["adapters"] == {
        f"{family.name}-adapter-{n}": (family.shadow, {"dim": 256, "version": 2,
                                                       "region": f"eu-{n}"})
        for n in (1, 2)}
    assert state["under_way"] == 0


@pytest.mark.parametrize("failing", list(UNDONE_WHEN_FAILING))
def test_a_failure_at_any_step_puts_the_family_back_exactly(
        backend: Backend, faults: RedisStore, failing: str) -> None:
    """When step ``failing`` fails for good, the family is as before: the same snapshot
    active, the new one shadow, each adapter with exactly its snapshot and configuration
    (the seed left adapters changed), and no activation holding the family.
    """
    family = new_family(backend.db)
    before = family_state(backend.db, family)
    faults.inject_fault(SAGA, failing, message=f"{failing} is down")
    run = activate(backend, family.shadow)
    assert run.status is SagaStatus.COMPENSATED, run.error
    assert run.error is not None and f"{failing} is down" in run.error.message
    assert run.compensations == UNDONE_WHEN_FAILING[failing]
    assert family_state(backend.db, family) == before
    faults.clear_faults()
    assert activate(backend, family.shadow).status is SagaStatus.COMPLETED  # family is free


def test_a_drift_over_the_limit_is_refused_naming_the_score(backend: Backend) -> None:
    family = new_family(backend.db, drift=0.31)
    run = activate(backend, family.shadow)
    assert run.status is SagaStatus.COMPENSATED
    assert run.error is not None
    assert run.error.step == "validate_drift"
    assert "drift score 0.31 exceeds the limit 0.15" in run.error.message
    assert run.step("validate_drift").attempts == 1  # not retried
    assert activate(backend, family.shadow, max_drift_score=0.5).status is SagaStatus.COMPLETED


def test_a_snapshot_that_is_not_shadow_is_refused(backend: Backend) -> None:
    family = new_family(backend.db)
    run = activate(backend, family.active)
    assert run.status is SagaStatus.COMPENSATED
    assert run.error is not None and "is active, not shadow" in run.error.message
    assert run.step("load_snapshot").attempts == 1


def denied(run: SagaRun) -> str:
    assert run.status is SagaStatus.COMPENSATED, run.error
    assert run.error is not None and run.error.step == "policy_check"
    assert run.step("policy_check").attempts == 1
    return run.error.message


def test_crown_denies_a_drift_over_the_familys_own_limit(backend: Backend) -> None:
    family = new_family(backend.db, drift=0.05)
    with backend.db.session() as session:
        session.add(DriftLimit(family=family.name, max_drift=0.02))
    before = family_state(backend.db, family)
    message = denied(activate(backend, family.shadow))
    assert f"drift_limit:{family.name}: drift score 0.05 is over the family's limit 0.02" \
        in message
    assert family_state(backend.db, family) == before


def test_crown_denies_an_activation_inside_a_freeze_window(backend: Backend) -> None:
    family = new_family(backend.db)
    with backend.db.session() as session:
        window = FreezeWindow(family=family.name, starts_at=utcnow() - timedelta(hours=1),
                              ends_at=utcnow() + timedelta(hours=1), reason="quarter close")
        session.add(window)
        session.flush()
        window_id = window.id
    message = denied(activate(backend, family.shadow))
    assert f"freeze_window:{window_id}: activations of {family.name} are frozen" in message
    assert "(quarter close)" in message
    with backend.db.session() as session:  # a window that has ended freezes nothing
        ended = session.get(FreezeWindow, window_id)
        assert ended is not None
        ended.ends_at = utcnow() - timedelta(minutes=1)
    assert activate(backend, family.shadow).status is SagaStatus.COMPLETED


def test_crown_waits_for_approval_signals_until_enough_distinct_approvers_approved(
        backend: Backend) -> None:
    """Short of approvals, policy_check waits for ``approval`` signals without holding a
    worker: an approval recorded before counts, the same approver sent twice counts once,
    one for another snapshot does not count, and the second distinct approver completes it.
    """
    family = new_family(backend.db)
    with backend.db.session() as session:
        session.add(ApprovalRule(family=family.name, required=2))
        assert approve(session, family.shadow, "ada")
        assert not approve(session, family.shadow, "ada")  # the same person counts once
    handle = backend.engine.start(SAGA, {"snapshot_id": family.shadow})
    wait_for_step(backend, handle.saga_id, "policy_check", StepStatus.WAITING)

    assert backend.engine.signal(handle.saga_id, "approval",
                                 {"approver": "ada"}).outcome == "delivered"
    wait_for_step(backend, handle.saga_id, "policy_check", StepStatus.WAITING, woken=1)
    assert backend.engine.signal(handle.saga_id, "approval",
                                 {"approver": "ada"}).outcome == "duplicate"
    elsewhere = {"approver": "grace", "snapshot_id": family.active}
    assert backend.engine.signal(handle.saga_id, "approval", elsewhere).outcome == "delivered"
    wait_for_step(backend, handle.saga_id, "policy_check", StepStatus.WAITING, woken=2)
    assert handle.get().status is SagaStatus.RUNNING
    backend.engine.signal(handle.saga_id, "approval", {"approver": "grace"})

    run = handle.wait(timeout=60)
    assert run.status is SagaStatus.COMPLETED, run.error
    assert run.step("policy_check").attempts == 1  # waiting spends no attempt
    with backend.db.session() as session:  # every approval is a row of its own
        assert session.query(Approval).filter_by(snapshot_id=family.shadow).count() == 2
    assert family_state(backend.db, family)["snapshots"][family.shadow] == ACTIVE


def test_crown_denies_when_the_approvals_do_not_come_in_time(backend: Backend) -> None:
    """One approval of the two comes; at the timeout the step runs once more and the
    activation is denied, naming the policy; nothing of the family changed.
    """
    family = new_family(backend.db)
    with backend.db.session() as session:
        session.add(ApprovalRule(family=family.name, required=2))
    before = family_state(backend.db, family)
    handle = backend.engine.start(SAGA, {"snapshot_id": family.shadow,
                                         "approval_timeout_s": 2})
    wait_for_step(backend, handle.saga_id, "policy_check", StepStatus.WAITING)
    backend.engine.signal(handle.saga_id, "approval", {"approver": "ada"})

    run = handle.wait(timeout=60)
    assert run.status is SagaStatus.COMPENSATED
    assert run.error is not None and run.error.step == "policy_check"
    assert run.error.type == "sagaline.errors.SignalTimeoutError"
    assert run.compensations == []  # nothing before Crown's check changes anything
    assert f"approvals:{family.name}: snapshot {family.shadow} has 1 of the 2 approvals" \
        in run.error.message
    assert family_state(backend.db, family) == before
    with pytest.raises(StateError, match="only a running saga takes signals"):
        backend.engine.signal(handle.saga_id, "approval", {"approver": "grace"})


def wait_for_step(backend: Backend, saga_id: str, step: str, status: StepStatus, *,
                  woken: int = 0, timeout: float = 30.0) -> None:
    """Wait until ``step`` is ``status``, having been woken ``woken`` times."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = backend.engine.get(saga_id)
        times = sum(1 for t in run.log if t.event == "action.woken" and t.step == step)
        if run.step(step).status is status and times >= woken and (
                status is not StepStatus.WAITING or _waits_again(run, step, woken)):
            return
        time.sleep(0.05)
    raise AssertionError(f"{step} of {saga_id} not {status.value} after {woken} wakes: "
                         f"{backend.engine.get(saga_id).step(step)}")


def _waits_again(run: SagaRun, step: str, woken: int) -> bool:
    """Whether the step waited once more after its ``woken``-th wake."""
    waits = sum(1 for t in run.log if t.event == "action.waiting" and t.step == step)
    return waits >= woken + 1


def test_the_database_refuses_two_active_snapshots_of_one_family(backend: Backend) -> None:
    """At most one active snapshot per family is the database's rule, not only the code's."""
    family = new_family(backend.db)
    with pytest.raises(IntegrityError), backend.db.session() as session:
        shadow = session.get(UpmSnapshot, family.shadow)
        assert shadow is not None
        shadow.status = ACTIVE
    assert family_state(backend.db, family)["snapshots"][family.shadow] == SHADOW


def test_an_activation_while_another_holds_the_family_fails_cleanly(backend: Backend) -> None:
    """A family claimed by an activation under way refuses a second one at
    ``deactivate_previous``, which changes nothing.
    """
    family = new_family(backend.db)
    with backend.db.session() as session:
        session.add(SnapshotActivation(id="claim-" + family.name, saga_key="other:" + family.name,
                                       family=family.name, snapshot_id="elsewhere"))
    before = family_state(backend.db, family)
    run = activate(backend, family.shadow)
    assert run.status is SagaStatus.COMPENSATED
    assert run.error is not None and run.error.step == "deactivate_previous"
    assert "another activation of family" in run.error.message
    assert family_state(backend.db, family) == before


def test_two_concurrent_activations_of_one_family_end_with_exactly_one_active(
        backend: Backend, faults: RedisStore) -> None:
    """Two activations started at once: exactly one completes, the other compensates.

    The family never has zero or two active snapshots. The adapters' sync is slowed by two
    failed attempts, so the two runs overlap whatever the machine's speed.
    """
    family: Family = new_family(backend.db)
    rival = add_shadow(backend.db, family, "v3")
    faults.inject_fault(SAGA, "sync_adapters", times=2)
    with ThreadPoolExecutor(2) as pool:
        handles = list(pool.map(
            lambda s: backend.engine.start(SAGA, {"snapshot_id": s}), [family.shadow, rival]))
    runs = [h.wait(timeout=60) for h in handles]
    statuses = sorted(r.status.value for r in runs)
    assert statuses == ["compensated", "completed"], [(r.status, r.error) for r in runs]
    winner = next(r for r in runs if r.status is SagaStatus.COMPLETED)
    loser = next(r for r in runs if r.status is SagaStatus.COMPENSATED)
    assert loser.error is not None and "another activation" in loser.error.message
    state = family_state(backend.db, family)
    active = [s for s, status in state["snapshots"].items() if status == ACTIVE]
    assert active == [winner.result["snapshot_id"]]
    assert {a[0] for a in state["adapters"].values()} == {winner.result["snapshot_id"]}
    assert state["under_way"] == 0
