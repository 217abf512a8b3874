"""The travel booking saga end to end: all three bookings, or none."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select

from sagaline import Sagaline, SagaStatus
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


def test_travel_booking_books_flight_hotel_and_car(engine: Sagaline) -> None:
    ids = fresh_resources()

    run = engine.start("travel_booking", {"traveler": "Ada", **ids}).wait(30)

    assert run.status is SagaStatus.COMPLETED
    assert run.result["car"]["car"] == ids["car_id"]
    assert available(ids) == [4, 4, 4]


def test_no_car_cancels_the_hotel_then_the_flight(engine: Sagaline) -> None:
    ids = fresh_resources(car=0)

    run = engine.start("travel_booking", {"traveler": "Ada", **ids}).wait(30)

    assert run.status is SagaStatus.COMPENSATED
    assert run.failed_step == "rent_car"
    assert run.compensations == ["cancel_hotel", "cancel_flight"]
    assert available(ids) == [5, 5, 0]
    with database.session() as session:
        statuses = session.scalars(select(Booking.status).where(
            Booking.saga_key.startswith(run.saga_id))).all()
    assert sorted(statuses) == ["cancelled", "cancelled"]


def test_workers_register_each_participant_under_its_own_task_name(engine: Sagaline) -> None:
    """What Flower and the logs show: the participants' own names, on the real worker."""
    replies = engine.app.control.inspect(timeout=2).registered() or {}
    names = {name for tasks in replies.values() for name in tasks}
    assert {"orders.create_order", "inventory.reserve_inventory", "payments.refund_payment",
            "travel.rent_car", "travel.cancel_flight"} <= names
