"""Order processing by choreography, as in Cliffracer's event-driven example.

No coordinator: the order service reacts to the placed order, inventory to the created
order, payments to the reserved stock; each emits what happened. A declined payment or
missing stock makes every participant that already acted undo its part.
"""

from __future__ import annotations

from sagaline.choreography import ChoreographySaga, Reaction
from tasks.inventory import release_inventory, reserve_inventory
from tasks.orders import cancel_order, create_order
from tasks.payments import process_payment, refund_payment

from .order_processing import OrderInput

order_choreography = ChoreographySaga(
    "order_choreography",
    inputs=OrderInput,
    description="An order placed, stocked and paid for through events, with no coordinator.",
    starts_with="checkout.order.placed",
    completes_on="checkout.payment.charged",
    reactions=[
        Reaction(on="checkout.order.placed", run=create_order, undo=cancel_order,
                 emits="checkout.order.accepted", fails_with="checkout.order.rejected"),
        Reaction(on="checkout.order.accepted", run=reserve_inventory, undo=release_inventory,
                 emits="checkout.stock.reserved", fails_with="checkout.reservation.failed"),
        Reaction(on="checkout.stock.reserved", run=process_payment, undo=refund_payment,
                 args={"amount": "total_amount"},
                 emits="checkout.payment.charged", fails_with="checkout.payment.declined"),
    ],
)
