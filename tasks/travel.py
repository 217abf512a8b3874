"""The travel domain: flights, hotels and cars, each with limited capacity, and bookings."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Integer, String, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from sagaline import NonRetryableError, StepContext, event_name, saga_task

from .db import Base, database


class Resource(Base):
    """Something bookable: a flight's seats, a hotel's rooms, a class of rental cars."""

    __tablename__ = "travel_resources"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    available: Mapped[int] = mapped_column(Integer)


class Booking(Base):
    """One unit of a resource held for a traveler; ``booked`` or ``cancelled``."""

    __tablename__ = "travel_bookings"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    saga_key: Mapped[str] = mapped_column(String(200), unique=True)
    resource_id: Mapped[str] = mapped_column(String(64))
    traveler: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20), default="booked")


class SoldOutError(NonRetryableError):
    """Raised when a flight, hotel or car class has nothing left."""


SEED = {
    "FL-100": ("flight", 100), "FL-FULL": ("flight", 0),
    "HTL-1": ("hotel", 50), "HTL-FULL": ("hotel", 0),
    "CAR-COMPACT": ("car", 20), "CAR-NONE": ("car", 0),
}


@database.seeder
def seed_resources(session: Session) -> None:
    """Flights, hotels and cars with room, and one of each that is sold out."""
    for resource_id, (kind, available) in SEED.items():
        if session.get(Resource, resource_id) is None:
            session.add(Resource(id=resource_id, kind=kind, available=available))


#: What each kind of booking emits when it is made, and when it is cancelled.
EVENTS = {
    "flight": (event_name("travel.flight.booked"), event_name("travel.flight.cancelled")),
    "hotel": (event_name("travel.hotel.booked"), event_name("travel.hotel.cancelled")),
    "car": (event_name("travel.car.booked"), event_name("travel.car.cancelled")),
}


def _book(ctx: StepContext, kind: str, resource_id: str, traveler: str) -> dict[str, Any]:
    """Take one of the resource, once per saga; emit that it was booked."""
    booking = _take(ctx, kind, resource_id, traveler)
    ctx.emit(EVENTS[kind][0], {"booking_id": booking["booking_id"], "resource_id": resource_id})
    return booking


def _take(ctx: StepContext, kind: str, resource_id: str, traveler: str) -> dict[str, Any]:
    with database.session() as session:
        existing = session.scalar(select(Booking).where(Booking.saga_key == ctx.idempotency_key))
        if existing is not None:
            return {"booking_id": existing.id, kind: resource_id}
        taken = session.execute(
            update(Resource)
            .where(Resource.id == resource_id, Resource.kind == kind, Resource.available > 0)
            .values(available=Resource.available - 1)
        )
        if taken.rowcount != 1:  # type: ignore[attr-defined]
            raise SoldOutError(f"{kind} {resource_id} is sold out or unknown",
                               kind=kind, resource_id=resource_id)
        booking = Booking(saga_key=ctx.idempotency_key, resource_id=resource_id,
                          traveler=traveler)
        session.add(booking)
        session.flush()
        return {"booking_id": booking.id, kind: resource_id}


def _cancel(ctx: StepContext, kind: str) -> dict[str, Any]:
    """Give back what the step's action took, once; emit that it was cancelled."""
    with database.session() as session:
        booking = session.scalar(select(Booking).where(Booking.saga_key == ctx.action_key))
        if booking is None or booking.status == "cancelled":
            return {"cancelled": False}
        session.execute(
            update(Resource)
            .where(Resource.id == booking.resource_id)
            .values(available=Resource.available + 1)
        )
        booking.status = "cancelled"
        ctx.emit(EVENTS[kind][1], {"booking_id": booking.id})
        return {"cancelled": True, "booking_id": booking.id}


@saga_task("travel.book_flight")
def book_flight(ctx: StepContext, flight_id: str, traveler: str) -> dict[str, Any]:
    """Hold a seat on the flight."""
    return _book(ctx, "flight", flight_id, traveler)


@saga_task("travel.cancel_flight")
def cancel_flight(ctx: StepContext) -> dict[str, Any]:
    """Give the seat back."""
    return _cancel(ctx, "flight")


@saga_task("travel.book_hotel")
def book_hotel(ctx: StepContext, hotel_id: str, traveler: str) -> dict[str, Any]:
    """Hold a room at the hotel."""
    return _book(ctx, "hotel", hotel_id, traveler)


@saga_task("travel.cancel_hotel")
def cancel_hotel(ctx: StepContext) -> dict[str, Any]:
    """Give the room back."""
    return _cancel(ctx, "hotel")


@saga_task("travel.rent_car")
def rent_car(ctx: StepContext, car_id: str, traveler: str) -> dict[str, Any]:
    """Hold a car of the class."""
    return _book(ctx, "car", car_id, traveler)


@saga_task("travel.cancel_car")
def cancel_car(ctx: StepContext) -> dict[str, Any]:
    """Give the car back."""
    return _cancel(ctx, "car")
