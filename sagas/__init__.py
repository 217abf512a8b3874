"""This app's sagas, one module a saga."""

from .cerebros_nas import cerebros_nas
from .order_choreography import order_choreography
from .order_processing import order_processing
from .shop_report import shop_report
from .travel_booking import travel_booking
from .upm_activation import upm_activation
from .user_provisioning import user_provisioning

SAGAS = [order_processing, travel_booking, user_provisioning, upm_activation, cerebros_nas,
         shop_report]
CHOREOGRAPHIES = [order_choreography]

__all__ = ["CHOREOGRAPHIES", "SAGAS", "cerebros_nas", "order_choreography", "order_processing",
           "shop_report", "travel_booking", "upm_activation", "user_provisioning"]
