"""The Redis store on its own: atomic transitions under concurrency, no lost records."""

from __future__ import annotations

import threading
from typing import Any

from sagaline import RedisStore, Role, Sagaline, SagaStatus, StepStatus, new_id


def test_steps_finishing_at_once_never_lose_each_others_records(store: RedisStore) -> None:
    """Twenty steps of one saga begin and complete from twenty threads at once; every
    result, attempt and log entry is recorded.
    """
    names = [f"s{i}" for i in range(20)]
    saga_id = new_id()
    store.create(saga_id, name="t_store", correlation_id=new_id(), causation_id=None,
                 inputs={}, plan=names)
    barrier = threading.Barrier(len(names))
    outcomes: dict[str, tuple[str, str]] = {}  # checked here: a thread's assert fails nothing

    def run(index: int, name: str) -> None:
        barrier.wait()
        claim = store.begin(saga_id, Role.ACTION, name, index=index, lease_s=30, needed=[])
        done = store.complete(saga_id, Role.ACTION, name, attempt=claim.attempt,
                              result={"n": index})
        outcomes[name] = (claim.kind, done)

    threads = [threading.Thread(target=run, args=(i, n)) for i, n in enumerate(names)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert outcomes == {name: ("run", "ok") for name in names}

    run_record = store.load(saga_id)
    assert [s.result for s in run_record.steps] == [{"n": i} for i in range(20)]
    assert all(s.status is StepStatus.COMPLETED and s.attempts == 1 for s in run_record.steps)
    completed = [t.step for t in run_record.log if t.event == "action.completed"]
    assert sorted(completed) == sorted(names)


def test_only_one_of_two_concurrent_claims_of_a_step_runs(store: RedisStore) -> None:
    """Two deliveries claim the same step at once: one runs it, the other finds it busy."""
    saga_id = new_id()
    store.create(saga_id, name="t_store", correlation_id=new_id(), causation_id=None,
                 inputs={}, plan=["only"])
    barrier = threading.Barrier(2)
    kinds: list[str] = []

    def claim() -> None:
        barrier.wait()
        kinds.append(store.begin(saga_id, Role.ACTION, "only", index=0, lease_s=30,
                                 needed=[]).kind)

    threads = [threading.Thread(target=claim) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert sorted(kinds) == ["busy", "run"]


def test_the_saga_turns_to_compensating_exactly_once(store: RedisStore) -> None:
    """Two errbacks for one failure: the first plans the compensations, the second is a
    no-op, so the rollback is enqueued once.
    """
    saga_id = new_id()
    store.create(saga_id, name="t_store", correlation_id=new_id(), causation_id=None,
                 inputs={}, plan=["a", "b", "c"])
    for index, name in enumerate(["a", "b"]):
        claim = store.begin(saga_id, Role.ACTION, name, index=index, lease_s=30, needed=[])
        store.complete(saga_id, Role.ACTION, name, attempt=claim.attempt, result=None)
    table = [("a", True), ("b", True), ("c", True)]
    error = {"type": "X", "message": "c failed", "step": "c"}

    first = store.fail_saga(saga_id, failed_step="c", error=error, table=table)
    second = store.fail_saga(saga_id, failed_step="c", error=error, table=table)

    assert first is not None and first.plan == ["b", "a"] and not first.awaiting
    assert second is None
    assert store.status(saga_id) is SagaStatus.COMPENSATING


def test_a_failure_before_any_completed_step_ends_compensated_with_nothing_to_undo(
    store: RedisStore,
) -> None:
    """When the first step fails, there is nothing to compensate: the saga ends at once."""
    saga_id = new_id()
    store.create(saga_id, name="t_store", correlation_id=new_id(), causation_id=None,
                 inputs={}, plan=["a"])

    rollback = store.fail_saga(saga_id, failed_step="a", error={"type": "X", "message": "m"},
                               table=[("a", True)])

    assert rollback is not None and rollback.plan == []
    assert store.status(saga_id) is SagaStatus.COMPENSATED
    assert store.wait(saga_id, timeout=1) is SagaStatus.COMPENSATED


def test_a_completed_step_claimed_again_gives_its_recorded_result(store: RedisStore) -> None:
    """A redelivered message of a completed step gets the recorded result back (and the
    claim says how far the saga went, so the runtime can tell whether to continue).
    """
    saga_id = new_id()
    store.create(saga_id, name="t_store", correlation_id=new_id(), causation_id=None,
                 inputs={}, plan=["a", "b"])
    claim = store.begin(saga_id, Role.ACTION, "a", index=0, lease_s=30, needed=[])
    store.complete(saga_id, Role.ACTION, "a", attempt=claim.attempt, result={"id": 7})

    again = store.begin(saga_id, Role.ACTION, "a", index=0, lease_s=30, needed=[])

    assert (again.kind, again.result, again.cursor) == ("completed", {"id": 7}, 0)
    assert store.load(saga_id).step("a").attempts == 1


def test_a_due_saga_of_an_unknown_definition_does_not_stop_the_sweep(
    engine: Sagaline, worker: object, calls: Any
) -> None:
    """A running saga whose saga this engine does not know (another app's, or an old one)
    is logged and looked at again later; the sweep goes on with the others: a known saga
    due after it is recovered by the same sweep, and completes.
    """
    store = engine.store
    unknown, known = new_id(), new_id()
    store.create(unknown, name="t_not_here", correlation_id=new_id(), causation_id=None,
                 inputs={}, plan=["only"])
    store.create(known, name="t_quick", correlation_id=new_id(), causation_id=None,
                 inputs={"tag": calls.tag}, plan=["only"])
    # Both overdue, the unknown one first (its message, say, was lost long ago).
    store.client.zadd(f"{store.prefix}index:active", {unknown: 0, known: 1})
    counts = engine.supervisor.recover()
    assert counts.get("unknown_saga", 0) >= 1
    assert counts.get("resumed", 0) >= 1
    later = store.client.zscore(f"{store.prefix}index:active", unknown)
    now = store.client.time()[0]
    assert later is not None and later > now
    recovering = [t for t in store.load(known).log if t.event == "saga.recovering"]
    assert [t.detail["recovery"] for t in recovering] == [1]
    assert engine.wait(known, 30).status is SagaStatus.COMPLETED
    assert calls.read() == ["only:action"]
    store.client.zrem(f"{store.prefix}index:active", unknown)
