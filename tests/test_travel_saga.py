"""The travel booking saga end to end: all three bookings, or none; the hotel and the car
are booked at once, after the flight.
"""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select

from sagaline import Sagaline, SagaStatus, StepStatus
from tasks.db import database
from tasks.travel import Booking, Resource

pytestmark = pytest.mark.usefixtures("worker")


def fresh_resources(flight: int = 5, hotel: int = 5, car: int = 5) -> dict[str, str]:
    suffix = uuid.uuid4().hex[:8]
    ids = {"flight_id": f"FL-{suffix}", "hotel_id": f"HTL-{suffix}", "car_id": f"CAR-{suffix}"}
    with database.session() as session:
        session.add(Resource(id=ids["flight_id"], kind="flight", available=flight))
        session.add(Resource(id=ids["hotel_id"], kind="hotel", available=hotel))
        session.add(Resource(id=ids["car_id"], kind="car", available=car))
    return ids


def available(ids: dict[str, str]) -> list[int]:
    with database.session() as session:
        return [session.get(Resource, ids[k]).available  # type: ignore[union-attr]
                for k in ("flight_id", "hotel_id", "car_id")]


def test_travel_booking_books_the_flight_then_hotel_and_car_at_once(engine: Sagaline) -> None:
    ids = fresh_resources()

    run = engine.start("travel_booking", {"traveler": "Ada", **ids}).wait(30)

    assert run.status is SagaStatus.COMPLETED
    assert run.result["car"]["car"] == ids["car_id"]
    assert available(ids) == [4, 4, 4]
    flight_end = run.step("book_flight").ended_at
    assert flight_end is not None
    for branch in ("book_hotel", "rent_car"):
        started = run.step(branch).started_at
        assert started is not None and started >= flight_end
    queued = [t.step for t in run.log if t.event == "action.queued"]
    assert sorted(queued) == ["book_hotel", "rent_car"]  # both sent together


def test_no_car_cancels_the_hotel_if_it_was_booked_then_the_flight(engine: Sagaline) -> None:
    """The car fails while the hotel is booked at the same time: a hotel booked before or
    after the failure is cancelled, once, before the flight; a hotel branch that had not
    started by then never books.
    """
    for _ in range(5):
        ids = fresh_resources(car=0)

        run = engine.start("travel_booking", {"traveler": "Ada", **ids}).wait(30)

        hotel_booked = run.step("book_hotel").status is StepStatus.COMPLETED
        assert run.status is SagaStatus.COMPENSATED
        assert run.failed_step == "rent_car"
        assert run.compensations == (["cancel_hotel"] if hotel_booked else []) + ["cancel_flight"]
        assert available(ids) == [5, 5, 0]
        with database.session() as session:
            statuses = session.scalars(select(Booking.status).where(
                Booking.saga_key.startswith(run.saga_id))).all()
        assert statuses == ["cancelled"] * (2 if hotel_booked else 1)


def test_workers_register_each_participant_under_its_own_task_name(engine: Sagaline) -> None:
    """What Flower and the logs show: the participants' own names, on the real worker."""
    replies = engine.app.control.inspect(timeout=2).registered() or {}
    names = {name for tasks in replies.values() for name in tasks}
    assert {"orders.create_order", "inventory.reserve_inventory", "payments.refund_payment",
            "travel.rent_car", "travel.cancel_flight"} <= names
