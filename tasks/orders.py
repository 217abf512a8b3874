"""The orders domain: customers and their orders."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import JSON, DateTime, ForeignKey, Integer, String, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from sagaline import NonRetryableError, StepContext, saga_task

from .db import Base, database


class Customer(Base):
    """A customer who may place orders."""

    __tablename__ = "customers"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))


class Order(Base):
    """An order; its status is ``created``, then ``confirmed`` or ``cancelled``."""

    __tablename__ = "orders"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    saga_key: Mapped[str] = mapped_column(String(200), unique=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"))
    items: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    total_cents: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20), default="created")
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=lambda: datetime.now(UTC)
    )


class OrderLine(BaseModel):
    """One line of an order."""

    product_id: str = Field(min_length=1)
    quantity: int = Field(gt=0)


class UnknownCustomerError(NonRetryableError):
    """Raised when an order names a customer who does not exist."""


class OrderNotOpenError(NonRetryableError):
    """Raised when an order to confirm is no longer open (it was cancelled)."""


@database.seeder
def seed_customers(session: Session) -> None:
    """The example customer, CUST-123."""
    if session.get(Customer, "CUST-123") is None:
        session.add(Customer(id="CUST-123", name="Example Customer"))


def cents(amount: Any) -> int:
    """An amount of money (a decimal string or number) in whole cents."""
    from decimal import ROUND_HALF_UP, Decimal

    return int((Decimal(str(amount)) * 100).quantize(Decimal("1"), rounding=ROUND_HALF_UP))


@saga_task("orders.create_order")
def create_order(
    ctx: StepContext, customer_id: str, items: list[OrderLine], total_amount: str
) -> dict[str, Any]:
    """Create the order (once per saga, whatever the redeliveries)."""
    with database.session() as session:
        existing = session.scalar(select(Order).where(Order.saga_key == ctx.idempotency_key))
        if existing is not None:
            ctx.emit("orders.order.created", {"order_id": existing.id,
                                              "customer_id": existing.customer_id})
            return {"order_id": existing.id}
        if session.get(Customer, customer_id) is None:
            raise UnknownCustomerError(f"customer {customer_id!r} does not exist",
                                       customer_id=customer_id)
        order = Order(
            saga_key=ctx.idempotency_key,
            customer_id=customer_id,
            items=[line.model_dump() for line in items],
            total_cents=cents(total_amount),
        )
        session.add(order)
        session.flush()
        ctx.emit("orders.order.created", {"order_id": order.id, "customer_id": customer_id})
        return {"order_id": order.id}


@saga_task("orders.cancel_order")
def cancel_order(ctx: StepContext, order_id: int) -> dict[str, Any]:
    """Cancel the order the saga created."""
    with database.session() as session:
        order = session.get(Order, order_id)
        if order is not None and order.status != "cancelled":
            order.status = "cancelled"
        ctx.emit("orders.order.cancelled", {"order_id": order_id})
        return {"order_id": order_id, "status": "cancelled"}


@saga_task("orders.confirm_order")
def confirm_order(ctx: StepContext, order_id: int) -> dict[str, Any]:
    """Confirm the order: the last step, after which nothing is undone."""
    with database.session() as session:
        order = session.get(Order, order_id)
        if order is None or order.status == "cancelled":
            raise OrderNotOpenError(f"order {order_id} is not open", order_id=order_id)
        order.status = "confirmed"
        ctx.emit("orders.order.confirmed", {"order_id": order_id})
        return {"order_id": order_id, "status": "confirmed"}
