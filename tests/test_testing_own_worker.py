"""``sagaline.testing`` without the pytest plugin: a harness that starts its own worker.

Apart from ``test_testing_harness.py``, whose module-wide worker would refuse a second one
(a process runs one in-process worker at a time).
"""

from __future__ import annotations

from sagaline import Sagaline, StepStatus
from sagaline.testing import SagaTestHarness, worker_for
from tests.test_travel_saga import fresh_resources


def test_closing_the_harness_clears_faults_and_stops_routing(engine: Sagaline) -> None:
    """A harness with its own worker: open routes and obeys faults; close undoes both."""
    honoured = engine.store.honour_faults
    routes = list(engine.app.amqp.router.routes)
    with SagaTestHarness(engine) as harness:
        harness.fail("travel_booking", "book_hotel", times=None)
        assert engine.store.honour_faults is True
        assert len(engine.app.amqp.router.routes) == len(routes) + 1
        ids = fresh_resources()
        report = harness.run("travel_booking", {"traveler": "Bo", **ids})
        # The car is rented beside the hotel: undone first if it was, then the flight.
        car_rented = report.run.step("rent_car").status is StepStatus.COMPLETED
        report.assert_compensated_in_order(
            ["cancel_car", "cancel_flight"] if car_rented else ["cancel_flight"])
        worker = harness.worker
    assert not worker.running
    assert engine.store.client.hlen(f"{engine.store.prefix}faults") == 0
    assert list(engine.app.amqp.router.routes) == routes
    assert worker.queue not in engine.app.amqp.queues
    assert worker.queue not in engine.app.amqp.queues.consume_from
    assert engine.store.honour_faults is honoured


def test_a_harness_on_a_shared_solo_worker_runs_the_travel_saga(engine: Sagaline) -> None:
    """The solo pool (one task at a time, in the consumer's thread) runs sagas too; a
    shared worker outlives the harness.
    """
    with worker_for(engine, pool="solo") as worker:
        with SagaTestHarness(engine, worker=worker) as harness:
            harness.fail("travel_booking", "rent_car", times=None)
            report = harness.run("travel_booking", {"traveler": "Flo", **fresh_resources()})
        assert worker.running
    report.assert_compensated_in_order(["cancel_hotel", "cancel_flight"])
    assert not worker.running
