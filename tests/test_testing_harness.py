"""``sagaline.testing`` on our own example sagas: fail a chosen step or compensation, run
the saga on the harness's in-process worker, and check what ran, in order, how often.
"""

from __future__ import annotations

import os
import textwrap
import uuid
from collections.abc import Iterator

import pytest

from sagaline import Role, Sagaline, SagaStatus, StepStatus, WaitTimeoutError
from sagaline.testing import Attempt, InProcessWorker, SagaTestHarness, worker_for
from tests.conftest import ROOT
from tests.test_order_saga import fresh_shop, order, rows
from tests.test_travel_saga import available, fresh_resources

pytest_plugins = ["sagaline.pytest_plugin", "pytester"]

ORDER_STEPS = ["create_order", "reserve_inventory", "process_payment", "create_shipment",
               "confirm_order"]


@pytest.fixture(scope="session")
def sagaline_engine(engine: Sagaline) -> Sagaline:
    """The engine under test: the test app's (the example sagas and the test sagas)."""
    return engine


@pytest.fixture(scope="module")
def saga_harness_worker(sagaline_engine: Sagaline) -> Iterator[InProcessWorker]:
    """The harness's worker, for this module only: later modules kill and restart things."""
    with worker_for(sagaline_engine) as worker:
        yield worker


def test_a_payment_that_always_fails_undoes_inventory_then_the_order(
    saga_harness: SagaTestHarness,
) -> None:
    """Given process_payment always fails, when an order runs, the reservation is released
    and then the order cancelled, each once, and the payment was tried once (no retry).
    """
    customer, product = fresh_shop()
    saga_harness.fail("order_processing", "process_payment", times=None,
                      message="card declined")

    report = saga_harness.run("order_processing", order(customer, product))

    report.assert_status(SagaStatus.COMPENSATED)
    report.assert_compensated_in_order(["release_inventory", "cancel_order"])
    report.assert_ran(["action:create_order", "action:reserve_inventory",
                       "action:process_payment", "compensation:reserve_inventory",
                       "compensation:create_order"])
    assert report.count("process_payment") == 1
    assert report.attempts[2] == Attempt("process_payment", Role.ACTION, 1, StepStatus.FAILED,
                                         "InjectedFaultError: card declined")
    assert rows(customer, product)["stock"] == 10
    assert rows(customer, product)["orders"] == ["cancelled"]


def test_a_compensation_that_fails_twice_is_retried_and_counted(
    saga_harness: SagaTestHarness,
) -> None:
    """Given confirm_order always fails and cancel_order fails twice, every completed step
    is undone in reverse, and cancel_order took three attempts.
    """
    customer, product = fresh_shop()
    saga_harness.fail("order_processing", "confirm_order", times=None)
    saga_harness.fail("order_processing", "create_order", compensation=True, times=2)

    report = saga_harness.run("order_processing", order(customer, product))

    report.assert_status("compensated")
    report.assert_compensated_in_order(
        ["cancel_shipment", "refund_payment", "release_inventory", "cancel_order"])
    assert report.count("confirm_order") == 3  # its retry policy: three attempts
    assert report.count("create_order", compensation=True) == 3
    assert report.count("reserve_inventory", compensation=True) == 1
    undo_order = [a.outcome for a in report.attempts
                  if a.operation == "compensation:create_order"]
    assert undo_order == [StepStatus.RETRYING, StepStatus.RETRYING, StepStatus.COMPLETED]


def test_a_step_that_fails_once_is_retried_and_the_saga_completes(
    saga_harness: SagaTestHarness,
) -> None:
    """A fault for one attempt of create_shipment costs one retry, and nothing is undone."""
    customer, product = fresh_shop()
    saga_harness.fail("order_processing", "create_shipment", times=1)

    report = saga_harness.run("order_processing", order(customer, product))

    report.assert_status(SagaStatus.COMPLETED)
    report.assert_compensated_in_order([])
    assert report.ran() == [f"action:{s}" for s in ORDER_STEPS[:3]] + [
        "action:create_shipment", "action:create_shipment", "action:confirm_order"]
    assert [str(a) for a in report.attempts[3:5]] == [
        "action:create_shipment attempt 1 retrying (InjectedFaultError: injected fault)",
        "action:create_shipment attempt 2 completed",
    ]


def test_expecting_the_wrong_order_of_compensations_fails_and_shows_both(
    saga_harness: SagaTestHarness,
) -> None:
    """An assertion of the wrong order raises AssertionError naming what ran instead."""
    customer, product = fresh_shop()
    saga_harness.fail("order_processing", "process_payment", times=None)
    report = saga_harness.run("order_processing", order(customer, product))

    with pytest.raises(AssertionError) as wrong:
        report.assert_compensated_in_order(["cancel_order", "release_inventory"])

    message = str(wrong.value)
    assert "expected: ['cancel_order', 'release_inventory']" in message
    assert "actual:   ['release_inventory', 'cancel_order']" in message
    assert "release_inventory undoes reserve_inventory" in message
    assert "3. action:process_payment attempt 1 failed" in message
    with pytest.raises(AssertionError, match="expected the saga to end completed"):
        report.assert_status(SagaStatus.COMPLETED)


def test_a_car_that_cannot_be_rented_cancels_the_hotel_then_the_flight(
    saga_harness: SagaTestHarness,
) -> None:
    """The travel saga: rent_car failing undoes the hotel if it was booked (it runs beside
    the car), then the flight; all rooms back.
    """
    ids = fresh_resources()
    saga_harness.fail("travel_booking", "rent_car", times=None, message="no cars")

    report = saga_harness.run("travel_booking", {"traveler": "Ada", **ids})

    report.assert_status(SagaStatus.COMPENSATED)
    hotel_booked = report.run.step("book_hotel").status is StepStatus.COMPLETED
    report.assert_compensated_in_order(
        ["cancel_hotel", "cancel_flight"] if hotel_booked else ["cancel_flight"])
    assert report.count("rent_car") == 1
    assert report.count("rent_car", compensation=True) == 0
    assert available(ids) == [5, 5, 5]


@pytest.mark.usefixtures("worker")
def test_the_harness_runs_its_sagas_on_its_own_worker_even_beside_others(
    saga_harness: SagaTestHarness,
) -> None:
    """With the session's worker processes consuming the app's queue, the harness's saga
    still runs in this process; a compensation failing for good is reported left undone.
    """
    report = saga_harness.run("t_undo_fails", {"tag": f"harness-{uuid.uuid4().hex}"})

    report.assert_status(SagaStatus.COMPENSATION_FAILED)
    assert report.run.step("first").result["pid"] == os.getpid()
    report.assert_compensated_in_order(["undo"])
    assert report.count("second", compensation=True) == 2
    assert report.run.undone == ["second"]
    assert "left undone: second" in report.describe()


def test_a_saga_started_by_other_code_runs_on_the_harness_and_can_be_awaited(
    saga_harness: SagaTestHarness, engine: Sagaline,
) -> None:
    """While the harness is open, a saga the app's own code starts is routed to its worker
    too; wait() reports on it like run().
    """
    ids = fresh_resources()
    saga_harness.fail("travel_booking", "book_hotel", times=1)

    handle = engine.start("travel_booking", {"traveler": "Eve", **ids})
    report = saga_harness.wait(handle.saga_id)

    report.assert_status(SagaStatus.COMPENSATED)
    # The car is rented beside the hotel: undone first if it was, then the flight.
    car_rented = report.run.step("rent_car").status is StepStatus.COMPLETED
    report.assert_compensated_in_order(
        ["cancel_car", "cancel_flight"] if car_rented else ["cancel_flight"])
    assert report.run.failed_step == "book_hotel"
    assert saga_harness.report(handle.saga_id).ran() == report.ran()


def test_a_saga_that_does_not_end_in_time_says_what_ran_so_far(
    saga_harness: SagaTestHarness,
) -> None:
    """The wait's timeout error carries the story so far."""
    with pytest.raises(WaitTimeoutError) as late:
        saga_harness.run("t_long_step", {"tag": f"harness-{uuid.uuid4().hex}"}, timeout=0.5)

    assert "is still running after 0.5 s" in str(late.value)
    assert "attempts, in the order they ran:" in str(late.value)


def test_faults_name_real_steps_and_compensations(saga_harness: SagaTestHarness) -> None:
    """A fault or a count for a step that does not exist is refused, naming the real ones."""
    with pytest.raises(ValueError, match=r"has no step 'pay'.*process_payment"):
        saga_harness.fail("order_processing", "pay")
    with pytest.raises(ValueError, match="'confirm_order' of saga 'order_processing' has no "
                                         "compensation"):
        saga_harness.fail("order_processing", "confirm_order", compensation=True)
    with pytest.raises(ValueError, match=r"no saga 'orders'.*order_processing"):
        saga_harness.fail("orders", "create_order")
    with pytest.raises(ValueError, match="times must be 1 or more"):
        saga_harness.fail("order_processing", "create_order", times=0)


def test_without_an_engine_fixture_the_harness_says_what_to_define(
    pytester: pytest.Pytester,
) -> None:
    """A user who loads the plugin but defines no sagaline_engine is told how to."""
    pytester.makepyfile(test_user="def test_it(saga_harness):\n    pass\n")

    result = pytester.runpytest_inprocess("-p", "no:celery", "-p", "no:cacheprovider",
                                          "-p", "sagaline.pytest_plugin")

    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*define a 'sagaline_engine' fixture*"])


def test_a_user_whose_only_worker_is_the_harness_tests_a_saga(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The documented set-up, in a fresh pytest process with no other worker and fault
    injection off in its settings: the plugin's fixtures run the saga and obey the fault.
    """
    pytester.makeconftest(textwrap.dedent("""
        import pytest

        pytest_plugins = ["sagaline.pytest_plugin"]

        @pytest.fixture(scope="session")
        def sagaline_engine():
            from config import engine
            return engine
    """))
    pytester.makepyfile(test_user=textwrap.dedent("""
        from sagaline import SagaStatus
        from tests.test_order_saga import fresh_shop, order

        def test_no_stock_cancels_the_order(saga_harness):
            saga_harness.fail("order_processing", "reserve_inventory", times=None)
            report = saga_harness.run("order_processing", order(*fresh_shop(), 1, "20.00"))
            report.assert_status(SagaStatus.COMPENSATED)
            report.assert_compensated_in_order(["cancel_order"])

        def test_the_wrong_order_fails(saga_harness):
            saga_harness.fail("order_processing", "create_shipment", times=None)
            report = saga_harness.run("order_processing", order(*fresh_shop(), 1, "20.00"))
            report.assert_compensated_in_order(
                ["cancel_order", "release_inventory", "refund_payment"])
    """))
    monkeypatch.setenv("SAGALINE_FAULT_INJECTION", "false")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))

    result = pytester.runpytest_subprocess("-p", "no:celery", "-p", "no:cacheprovider",
                                           timeout=240)

    result.assert_outcomes(passed=1, failed=1)
    output = result.stdout.str()
    assert "expected: ['cancel_order', 'release_inventory', 'refund_payment']" in output
    assert "actual:   ['refund_payment', 'release_inventory', 'cancel_order']" in output
