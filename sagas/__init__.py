"""This app's sagas, one module a saga."""

from .order_processing import order_processing
from .travel_booking import travel_booking

SAGAS = [order_processing, travel_booking]

__all__ = ["SAGAS", "order_processing", "travel_booking"]
