"""Order processing, as in Cliffracer's saga document.

Create the order, reserve stock, take payment, schedule shipment, confirm. A failure undoes
what was done, last first. A payment the balance cannot cover goes to the customer's backup
card instead (a fallback); a rollback then refunds the card.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from pydantic import BaseModel, Field

from sagaline import NO_RETRY, Fallback, FromInput, FromStep, RetryPolicy, Saga, Step
from sagaline.refs import Ref
from tasks.inventory import release_inventory, reserve_inventory
from tasks.orders import OrderLine, cancel_order, confirm_order, create_order
from tasks.payments import (
    charge_backup_card,
    process_payment,
    refund_backup_card,
    refund_payment,
)
from tasks.shipping import cancel_shipment, create_shipment


class OrderInput(BaseModel):
    """What a customer orders."""

    customer_id: str = Field(min_length=1)
    items: list[OrderLine] = Field(min_length=1)
    total_amount: Decimal = Field(gt=0, max_digits=12, decimal_places=2)


ORDER_ID = FromStep("create_order", "order_id")
QUICK_RETRY = RetryPolicy(attempts=3, initial=timedelta(milliseconds=200))
PAYMENT_ARGS: dict[str, Ref] = {"customer_id": FromInput("customer_id"), "order_id": ORDER_ID,
                "amount": FromInput("total_amount")}

order_processing = Saga(
    "order_processing",
    description="Create an order, reserve its stock, take payment, ship it, confirm it.",
    inputs=OrderInput,
    steps=[
        Step("create_order", create_order, compensation=cancel_order,
             args={"customer_id": FromInput("customer_id"), "items": FromInput("items"),
                   "total_amount": FromInput("total_amount")},
             compensation_args={"order_id": ORDER_ID},
             retry=QUICK_RETRY, time_limit=timedelta(seconds=10)),
        Step("reserve_inventory", reserve_inventory, compensation=release_inventory,
             args={"order_id": ORDER_ID, "items": FromInput("items")},
             retry=NO_RETRY, time_limit=timedelta(seconds=10)),
        Step("process_payment", process_payment, compensation=refund_payment,
             args=PAYMENT_ARGS, retry=NO_RETRY, time_limit=timedelta(seconds=30),
             fallback=Fallback(charge_backup_card, compensation=refund_backup_card,
                               args=PAYMENT_ARGS, retry=NO_RETRY)),
        Step("create_shipment", create_shipment, compensation=cancel_shipment,
             args={"order_id": ORDER_ID},
             retry=QUICK_RETRY, time_limit=timedelta(seconds=10)),
        Step("confirm_order", confirm_order,
             args={"order_id": ORDER_ID},
             retry=QUICK_RETRY, time_limit=timedelta(seconds=10)),
    ],
    returns={"order_id": ORDER_ID,
             "payment_id": FromStep("process_payment", "payment_id"),
             "shipment_id": FromStep("create_shipment", "shipment_id")},
)
