"""The inventory domain: products' stock and the reservations held against it."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Boolean, ForeignKey, Integer, String, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from sagaline import NonRetryableError, StepContext, saga_task

from .db import Base, database
from .orders import OrderLine


class Product(Base):
    """A product and how many are in stock (never negative)."""

    __tablename__ = "products"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    stock: Mapped[int] = mapped_column(Integer)


class Reservation(Base):
    """Stock held for one order line by one saga step."""

    __tablename__ = "reservations"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    saga_key: Mapped[str] = mapped_column(String(200), index=True)
    order_id: Mapped[int] = mapped_column(Integer)
    product_id: Mapped[str] = mapped_column(ForeignKey("products.id"))
    quantity: Mapped[int] = mapped_column(Integer)
    released: Mapped[bool] = mapped_column(Boolean, default=False)


class OutOfStockError(NonRetryableError):
    """Raised when a product has less stock than an order asks for."""


@database.seeder
def seed_products(session: Session) -> None:
    """The example product, PROD-1, with 10 in stock."""
    if session.get(Product, "PROD-1") is None:
        session.add(Product(id="PROD-1", stock=10))


@saga_task("inventory.reserve_inventory")
def reserve_inventory(ctx: StepContext, order_id: int, items: list[OrderLine]) -> dict[str, Any]:
    """Take every line's quantity out of stock, all or nothing; never below zero."""
    with database.session() as session:
        held = session.scalars(
            select(Reservation).where(Reservation.saga_key == ctx.idempotency_key)
        ).all()
        if held:
            ctx.emit("inventory.stock.reserved", {"order_id": order_id,
                                                  "reservation_ids": [r.id for r in held]})
            return {"reservation_ids": [r.id for r in held]}
        ids = []
        for line in items:
            taken = session.execute(
                update(Product)
                .where(Product.id == line.product_id, Product.stock >= line.quantity)
                .values(stock=Product.stock - line.quantity)
            )
            if taken.rowcount != 1:  # type: ignore[attr-defined]
                product = session.get(Product, line.product_id)
                have = 0 if product is None else product.stock
                # Raising rolls the whole transaction back: no line stays reserved.
                raise OutOfStockError(
                    f"{line.product_id}: {line.quantity} wanted, {have} in stock",
                    product_id=line.product_id, wanted=line.quantity, in_stock=have,
                )
            reservation = Reservation(saga_key=ctx.idempotency_key, order_id=order_id,
                                      product_id=line.product_id, quantity=line.quantity)
            session.add(reservation)
            session.flush()
            ids.append(reservation.id)
        ctx.emit("inventory.stock.reserved", {"order_id": order_id, "reservation_ids": ids})
        return {"reservation_ids": ids}


@saga_task("inventory.release_inventory")
def release_inventory(ctx: StepContext, order_id: int) -> dict[str, Any]:
    """Put back the stock the step reserved; releasing twice puts back nothing more."""
    with database.session() as session:
        held = session.scalars(
            select(Reservation).where(
                Reservation.saga_key == ctx.action_key, Reservation.released.is_(False)
            )
        ).all()
        for reservation in held:
            session.execute(
                update(Product)
                .where(Product.id == reservation.product_id)
                .values(stock=Product.stock + reservation.quantity)
            )
            reservation.released = True
        ctx.emit("inventory.stock.released", {"order_id": order_id, "released": len(held)})
        return {"order_id": order_id, "released": len(held)}
