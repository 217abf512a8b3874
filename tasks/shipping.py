"""The shipping domain: shipments scheduled for orders."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Integer, String, select
from sqlalchemy.orm import Mapped, mapped_column

from sagaline import StepContext, saga_task

from .db import Base, database


class Shipment(Base):
    """A shipment for one order; ``scheduled``, or ``cancelled`` by the compensation."""

    __tablename__ = "shipments"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    saga_key: Mapped[str] = mapped_column(String(200), unique=True)
    order_id: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20), default="scheduled")


@saga_task("shipping.create_shipment")
def create_shipment(ctx: StepContext, order_id: int) -> dict[str, Any]:
    """Schedule the order's shipment, once."""
    with database.session() as session:
        existing = session.scalar(select(Shipment).where(Shipment.saga_key == ctx.idempotency_key))
        if existing is not None:
            ctx.emit("shipping.shipment.scheduled", {"order_id": order_id,
                                                     "shipment_id": existing.id})
            return {"shipment_id": existing.id}
        shipment = Shipment(saga_key=ctx.idempotency_key, order_id=order_id)
        session.add(shipment)
        session.flush()
        ctx.emit("shipping.shipment.scheduled", {"order_id": order_id,
                                                 "shipment_id": shipment.id})
        return {"shipment_id": shipment.id}


@saga_task("shipping.cancel_shipment")
def cancel_shipment(ctx: StepContext, order_id: int) -> dict[str, Any]:
    """Cancel the shipment the step scheduled."""
    with database.session() as session:
        shipment = session.scalar(select(Shipment).where(Shipment.saga_key == ctx.action_key))
        if shipment is not None:
            shipment.status = "cancelled"
        ctx.emit("shipping.shipment.cancelled", {"order_id": order_id})
        return {"order_id": order_id, "status": "cancelled"}
