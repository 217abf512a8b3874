"""The engine's runtime on a real worker: time limits, duplicate deliveries, compensation
failures, input validation, retention.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import pytest
from celery import Celery

from sagaline import (
    EnqueueError,
    InvalidCorrelationIdError,
    InvalidInputError,
    RedisStore,
    Sagaline,
    SagaStatus,
    StepStatus,
)
from sagaline.runtime import Envelope
from sagaline.status import Role
from sagaline.transport import ENVELOPE
from tests.support.sagas import quick
from tests.support.steps import gate_key

pytestmark = pytest.mark.usefixtures("worker")


def wait_for(check: Callable[[], bool], timeout: float = 20.0) -> None:
    """Wait until ``check()`` holds, or fail."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "the condition did not hold in time"
        time.sleep(0.02)


def test_step_over_its_time_limit_fails_and_is_compensated_like_any_failure(
    engine: Sagaline, calls: object
) -> None:
    """A 5 s step with a 1 s limit is interrupted, recorded as a timeout, and the completed
    step before it is undone.
    """
    tag = calls.tag  # type: ignore[attr-defined]
    started = time.monotonic()

    run = engine.start("t_too_slow", {"tag": tag}).wait(30)

    assert time.monotonic() - started < 4.5  # it did not wait for the 5 s sleep
    assert run.status is SagaStatus.COMPENSATED
    assert run.failed_step == "slow"
    assert run.error is not None and run.error.type == "sagaline.errors.StepTimeoutError"
    assert "time limit of 1 s" in run.error.message
    assert calls.read() == ["first:action", "slow:start", "first:compensation"]  # type: ignore[attr-defined]


def test_failing_compensation_does_not_stop_the_earlier_ones(
    engine: Sagaline, calls: object
) -> None:
    """Step four fails; third has no compensation and is skipped; second's compensation
    fails twice (its policy's attempts); first's still runs; the outcome names second as
    left undone.
    """
    tag = calls.tag  # type: ignore[attr-defined]

    run = engine.start("t_undo_fails", {"tag": tag}).wait(30)

    assert run.status is SagaStatus.COMPENSATION_FAILED
    assert run.undone == ["second"]
    assert run.compensations == ["undo"]
    assert calls.read() == [  # type: ignore[attr-defined]
        "first:action", "second:action", "third:action", "fourth:action",
        "second:compensation:1", "second:compensation:2", "first:compensation",
    ]
    skipped = [t.step for t in run.log if t.event == "compensation.skipped"]
    assert skipped == ["third"]
    assert run.step("third").compensation is None
    assert run.step("second").compensation.attempts == 2  # type: ignore[union-attr]
    assert run.log[-1].event == "saga.compensation_failed"
    assert run.log[-1].detail["undone"] == ["second"]


def test_a_step_message_delivered_again_after_it_completed_does_not_run_again(
    engine: Sagaline, calls: object
) -> None:
    """Redelivering a completed step's message returns the recorded result; the action
    does not run a second time and nothing in the record changes.
    """
    tag = calls.tag  # type: ignore[attr-defined]
    run = engine.start("t_slow_start", {"tag": tag}).wait(30)
    assert run.status is SagaStatus.COMPLETED
    task = engine.app.tasks["testing.succeed"]
    envelope = Envelope(run.saga_id, "t_slow_start", "after", Role.ACTION).to_message()

    task.apply_async(kwargs={ENVELOPE: envelope})

    wait_for(lambda: any(t.event == "action.duplicate" for t in engine.get(run.saga_id).log))
    later = engine.get(run.saga_id)
    duplicates = [t for t in later.log if t.event == "action.duplicate"]
    assert [(t.step, t.detail["reason"]) for t in duplicates] == [
        ("after", "the saga is completed")
    ]
    assert calls.read().count("after:action") == 1  # type: ignore[attr-defined]
    assert later.step("after").attempts == 1
    assert later.status is SagaStatus.COMPLETED


def test_a_duplicate_delivered_while_the_step_runs_does_not_run_it_twice(
    engine: Sagaline, calls: object
) -> None:
    """A second message for a step that is running (two worker processes, at once) finds
    the live lease, waits, and never runs the action; the saga completes once.
    """
    tag = calls.tag  # type: ignore[attr-defined]
    handle = engine.start("t_slow_start", {"tag": tag})
    wait_for(lambda: "slow:start" in calls.read())  # type: ignore[attr-defined]
    envelope = Envelope(handle.saga_id, "t_slow_start", "slow", Role.ACTION).to_message()

    engine.app.tasks["testing.sleep"].apply_async(kwargs={ENVELOPE: envelope})
    run = handle.wait(30)

    def reasons() -> list[str]:
        return [t.detail["reason"] for t in engine.get(run.saga_id).log
                if t.event == "action.duplicate"]

    # the duplicate comes back once the lease is decided
    wait_for(lambda: len(reasons()) >= 2 and reasons()[-1] != "another attempt holds the lease")
    later = engine.get(run.saga_id)

    assert run.status is SagaStatus.COMPLETED
    assert calls.read() == ["slow:start", "slow:end", "after:action"]  # type: ignore[attr-defined]
    assert later.step("slow").attempts == 1
    seen = reasons()
    assert seen[0] == "another attempt holds the lease"
    assert set(seen[1:-1]) <= {"another attempt holds the lease"}
    assert seen[-1] in ("it completed before", "the saga is completed")


def test_a_compensation_delivered_again_runs_once_whether_it_completed_or_still_runs(
    engine: Sagaline, calls: object
) -> None:
    """The rollback of t_held_rollback: second's compensation completes, then first's holds
    until the test lets it go. Meanwhile second's message is delivered again (it completed
    before) and so is first's (another attempt holds its lease; it comes back later and
    finds it done). Neither runs a second time; the saga ends compensated once.
    """
    tag = calls.tag  # type: ignore[attr-defined]
    handle = engine.start("t_held_rollback", {"tag": tag})
    wait_for(lambda: "first:undo:start" in calls.read())  # type: ignore[attr-defined]

    for step, task in (("second", "testing.undo"), ("first", "testing.held_undo")):
        envelope = Envelope(handle.saga_id, "t_held_rollback", step, Role.COMPENSATION)
        engine.app.tasks[task].apply_async(kwargs={ENVELOPE: envelope.to_message()})

    def duplicates() -> list[tuple[str | None, object]]:
        return [(t.step, t.detail["reason"]) for t in handle.get().log
                if t.event == "compensation.duplicate"]

    wait_for(lambda: {s for s, _ in duplicates()} == {"first", "second"})
    assert handle.get().status is SagaStatus.COMPENSATING  # first's undo still holds
    engine.store.client.set(gate_key(tag), "1")
    run = handle.wait(30)
    wait_for(lambda: [r for s, r in duplicates() if s == "first"][-1]
             != "another attempt holds the lease")  # first's copy came back and was dropped

    assert run.status is SagaStatus.COMPENSATED
    assert calls.read() == [  # type: ignore[attr-defined]
        "first:action", "second:action", "third:action", "second:compensation",
        "first:undo:start", "first:undo:end",
    ]
    assert [r for s, r in duplicates() if s == "second"] == ["it completed before"]
    first = [r for s, r in duplicates() if s == "first"]
    assert first[0] == "another attempt holds the lease"
    assert set(first[1:-1]) <= {"another attempt holds the lease"}
    assert first[-1] in ("it completed before", "the saga is compensated")
    assert [t.step for t in run.log if t.event == "compensation.completed"] == [
        "second", "first"]
    for name in ("first", "second"):
        undo = run.step(name).compensation
        assert undo is not None and undo.status is StepStatus.COMPLETED and undo.attempts == 1
    assert engine.get(run.saga_id).status is SagaStatus.COMPENSATED


def test_a_start_the_broker_refuses_raises_enqueue_error_and_is_recorded_failed(
    engine: Sagaline,
) -> None:
    """An engine whose broker is down (nothing listens on its port), on the tests' store:
    the start records the run, cannot enqueue its first message, records it failed with
    the broker's error, and raises EnqueueError naming the saga.
    """
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = Celery("broker-down", set_as_current=False)
    app.conf.update(
        broker_url=f"redis://127.0.0.1:{port}/0", task_serializer="json",
        result_serializer="json", accept_content=["json"], result_accept_content=["json"],
        task_publish_retry=False, broker_transport_options={"max_retries": 0},  # fail at once
    )
    store = RedisStore(engine.store.client, prefix=engine.store.prefix,
                       retention_s=engine.store.retention_s, handoff_s=engine.store.handoff_s)
    down = Sagaline(app, store, sagas=[quick])
    before = set(engine.store.list_ids(limit=10_000))
    queued = engine.store.client.llen("celery")

    with pytest.raises(EnqueueError) as refused:
        down.start("t_quick", {"tag": "broker-down"})

    new = set(engine.store.list_ids(limit=10_000)) - before
    assert len(new) == 1
    saga_id = new.pop()
    assert f"saga {saga_id} was recorded but could not be enqueued" in str(refused.value)
    run = engine.get(saga_id)
    assert run.status is SagaStatus.FAILED
    assert run.error is not None and run.error.message
    assert run.ended_at is not None
    assert run.step("only").attempts == 0
    assert saga_id not in engine.store.active_ids()
    assert engine.store.client.llen("celery") == queued


@pytest.mark.parametrize(
    ("inputs", "field"),
    [
        ({"customer_id": "CUST-123", "items": [{"product_id": "PROD-1", "quantity": 0}],
          "total_amount": "10.00"}, "items.0.quantity"),
        ({"customer_id": "CUST-123", "items": [], "total_amount": "10.00"}, "items"),
        ({"customer_id": "CUST-123", "items": [{"product_id": "PROD-1", "quantity": 1}]},
         "total_amount"),
        ({"customer_id": "CUST-123", "items": [{"product_id": "PROD-1", "quantity": 1}],
          "total_amount": "ten"}, "total_amount"),
    ],
)
def test_invalid_input_is_refused_naming_the_field_and_nothing_is_recorded(
    engine: Sagaline, inputs: dict[str, object], field: str
) -> None:
    """Bad inputs raise InvalidInputError naming the field; no saga is recorded, no message
    is enqueued.
    """
    before = set(engine.store.list_ids(limit=10_000))
    queued = engine.store.client.llen("celery")

    with pytest.raises(InvalidInputError) as raised:
        engine.start("order_processing", inputs)

    assert field in [e["field"] for e in raised.value.errors]
    assert field in str(raised.value)
    assert set(engine.store.list_ids(limit=10_000)) == before
    assert engine.store.client.llen("celery") == queued


def test_a_malformed_correlation_id_is_refused_before_anything_is_recorded(
    engine: Sagaline,
) -> None:
    """A correlation id that is not a UUID is refused; a missing one is generated as v7."""
    before = set(engine.store.list_ids(limit=10_000))
    with pytest.raises(InvalidCorrelationIdError):
        engine.start("t_slow_start", {"tag": "x"}, correlation_id="not-a-uuid")
    assert set(engine.store.list_ids(limit=10_000)) == before


def test_a_finished_saga_is_kept_for_the_retention_time(engine: Sagaline, calls: object) -> None:
    """Once final, the saga's records (and its correlation index) expire after the
    configured retention (7 days).
    """
    run = engine.start("t_slow_start", {"tag": calls.tag}).wait(30)  # type: ignore[attr-defined]

    keys = [*engine.store.saga_keys(run.saga_id),
            f"{engine.store.prefix}index:correlation:{run.correlation_id}"]
    ttls = [engine.store.client.ttl(k) for k in keys]

    assert all(7 * 86400 - 60 < t <= 7 * 86400 for t in ttls)
    assert run.correlation_id[14] == "7"  # a generated UUIDv7
    assert run.step("slow").status is StepStatus.COMPLETED
