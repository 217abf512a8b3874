"""``sagaline.testing``'s reading of a run, without a worker: attempts from the log."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from sagaline import Role, Sagaline, SagaRun, SagaStatus, StepStatus, Transition
from sagaline.testing import Attempt, RunReport, SagaTestHarness, attempts_in
from sagas.travel_booking import travel_booking

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def entry(event: str, step: str | None = None, attempt: int | None = None,
          **detail: Any) -> Transition:
    return Transition(at=NOW, event=event, step=step, attempt=attempt, detail=detail)


LOG = [
    entry("saga.started"),
    entry("action.started", "book_flight", 1),
    entry("action.completed", "book_flight", 1),
    entry("action.started", "book_hotel", 1),
    entry("action.retrying", "book_hotel", 1, retry_in_s=0.2,
          error={"type": "tasks.travel.Busy", "message": "try later"}),
    entry("action.duplicate", "book_hotel", reason="busy"),
    entry("action.started", "book_hotel", 2),
    entry("action.failed", "book_hotel", 2, error={"type": "x.Full", "message": "no room"}),
    entry("saga.failed", "book_hotel"),
    entry("compensation.skipped", "book_hotel"),
    entry("compensation.started", "book_flight", 1),
    entry("compensation.failed", "book_flight", 0, error={"type": "x.Lost", "message": "gone"}),
    entry("compensation.failed", "book_flight", 3, error={"type": "x.Lost", "message": "gone"}),
]


def test_attempts_follow_the_log_in_order_with_outcomes_and_errors() -> None:
    """Each started attempt ends as logged; duplicates and skips are not attempts; a
    failure naming no attempt ends the open one; one with no start counts on its own.
    """
    attempts = attempts_in(LOG)

    assert [str(a) for a in attempts] == [
        "action:book_flight attempt 1 completed",
        "action:book_hotel attempt 1 retrying (Busy: try later)",
        "action:book_hotel attempt 2 failed (Full: no room)",
        "compensation:book_flight attempt 1 failed (Lost: gone)",
        "compensation:book_flight attempt 3 failed (Lost: gone)",
    ]
    assert attempts[0] == Attempt("book_flight", Role.ACTION, 1, StepStatus.COMPLETED)


def report_of(log: list[Transition]) -> RunReport:
    run = SagaRun(saga_id="s-1", name="travel_booking", status=SagaStatus.COMPENSATED,
                  correlation_id="c-1", created_at=NOW, log=log,
                  compensations=["cancel_flight"], failed_step="book_hotel")
    return RunReport.of(run, travel_booking)


def test_counts_and_assertions_read_the_same_attempts() -> None:
    report = report_of(LOG)

    assert report.count("book_hotel") == 2
    assert report.count("book_flight", compensation=True) == 2
    assert report.count("rent_car") == 0
    report.assert_compensated_in_order(["cancel_flight"])
    report.assert_status("compensated")
    with pytest.raises(ValueError, match="no step 'book_car'"):
        report.count("book_car")
    with pytest.raises(AssertionError, match=r"attempts differ(.|\n)*\+ action:book_hotel"):
        report.assert_ran(["action:book_flight"])
    assert repr(report) == ("RunReport(saga='travel_booking', saga_id='s-1', "
                            "status='compensated', attempts=5)")


def test_a_harness_refuses_faults_before_it_is_open(engine: Sagaline) -> None:
    """Opening clears faults, so a fault set before opening would be lost: refused."""
    harness = SagaTestHarness(engine)
    with pytest.raises(RuntimeError, match="not open"):
        harness.fail("travel_booking", "book_hotel")
