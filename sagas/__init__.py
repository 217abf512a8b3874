"""This app's sagas, one module a saga."""

from .order_choreography import order_choreography
from .order_processing import order_processing
from .travel_booking import travel_booking

SAGAS = [order_processing, travel_booking]
CHOREOGRAPHIES = [order_choreography]

__all__ = ["CHOREOGRAPHIES", "SAGAS", "order_choreography", "order_processing",
           "travel_booking"]
