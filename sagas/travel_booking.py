"""Travel booking, as in Cliffracer's example: a flight, a hotel and a car, all or none.

Once the flight is booked, the hotel and the car are booked at once (a parallel group).
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel, Field

from sagaline import NO_RETRY, FromInput, FromStep, Parallel, Saga, Step
from tasks.travel import (
    book_flight,
    book_hotel,
    cancel_car,
    cancel_flight,
    cancel_hotel,
    rent_car,
)


class TravelInput(BaseModel):
    """Who travels, and what to book."""

    traveler: str = Field(min_length=1)
    flight_id: str = Field(min_length=1)
    hotel_id: str = Field(min_length=1)
    car_id: str = Field(min_length=1)


TRAVELER = FromInput("traveler")

travel_booking = Saga(
    "travel_booking",
    description="Book a flight, a hotel and a car; if one cannot be had, cancel the others.",
    inputs=TravelInput,
    steps=[
        Step("book_flight", book_flight, compensation=cancel_flight,
             args={"flight_id": FromInput("flight_id"), "traveler": TRAVELER}, retry=NO_RETRY),
        Parallel("book_stay", [
            Step("book_hotel", book_hotel, compensation=cancel_hotel,
                 args={"hotel_id": FromInput("hotel_id"), "traveler": TRAVELER},
                 retry=NO_RETRY),
            Step("rent_car", rent_car, compensation=cancel_car,
                 args={"car_id": FromInput("car_id"), "traveler": TRAVELER}, retry=NO_RETRY),
        ], max_concurrency=2),
    ],
    returns={"flight": FromStep("book_flight"), "hotel": FromStep("book_hotel"),
             "car": FromStep("rent_car")},
    step_time_limit=timedelta(seconds=30),
)
