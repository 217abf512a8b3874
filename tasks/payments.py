"""The payments domain: customers' balances, their backup cards, and what is taken."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Integer, String, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from sagaline import NonRetryableError, StepContext, saga_task

from .db import Base, database
from .orders import cents


class Account(Base):
    """A customer's balance, in cents (never negative)."""

    __tablename__ = "accounts"
    customer_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    balance_cents: Mapped[int] = mapped_column(Integer)


class Charge:
    """The columns of money taken for one order, once per saga (``saga_key``)."""

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    saga_key: Mapped[str] = mapped_column(String(200), unique=True)
    customer_id: Mapped[str] = mapped_column(String(64))
    order_id: Mapped[int] = mapped_column(Integer)
    amount_cents: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20), default="captured")
    """``captured``, or ``refunded`` by the compensation."""


class Payment(Charge, Base):
    """Money taken from the customer's balance for one order."""

    __tablename__ = "payments"


class BackupCard(Base):
    """A customer's backup card: what it may still be charged, in cents (never negative)."""

    __tablename__ = "backup_cards"
    customer_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    available_cents: Mapped[int] = mapped_column(Integer)


class BackupCharge(Charge, Base):
    """Money charged to a customer's backup card for one order (the fallback)."""

    __tablename__ = "backup_charges"


class InsufficientFundsError(NonRetryableError):
    """Raised when a payment is larger than the customer's balance."""


class BackupCardDeclinedError(NonRetryableError):
    """Raised when a customer has no backup card, or the amount is above what it allows."""


#: The backup card limit of the example customer.
BACKUP_LIMIT_CENTS = 20_000


@database.seeder
def seed_accounts(session: Session) -> None:
    """CUST-123 holds 500.00, and has a backup card with a limit of 200.00."""
    if session.get(Account, "CUST-123") is None:
        session.add(Account(customer_id="CUST-123", balance_cents=50_000))
    if session.get(BackupCard, "CUST-123") is None:
        session.add(BackupCard(customer_id="CUST-123", available_cents=BACKUP_LIMIT_CENTS))


@saga_task("payments.process_payment")
def process_payment(
    ctx: StepContext, customer_id: str, order_id: int, amount: str
) -> dict[str, Any]:
    """Take the amount from the customer's balance, once; refuse if the balance is short."""
    wanted = cents(amount)
    with database.session() as session:
        existing = session.scalar(select(Payment).where(Payment.saga_key == ctx.idempotency_key))
        if existing is not None:
            ctx.emit("payments.payment.charged", {"payment_id": existing.id,
                                                  "amount_cents": existing.amount_cents})
            return {"payment_id": existing.id, "amount_cents": existing.amount_cents}
        taken = session.execute(
            update(Account)
            .where(Account.customer_id == customer_id, Account.balance_cents >= wanted)
            .values(balance_cents=Account.balance_cents - wanted)
        )
        if taken.rowcount != 1:  # type: ignore[attr-defined]
            account = session.get(Account, customer_id)
            balance = 0 if account is None else account.balance_cents
            raise InsufficientFundsError(
                f"{customer_id}: {wanted / 100:.2f} asked, {balance / 100:.2f} available",
                customer_id=customer_id, amount_cents=wanted, balance_cents=balance,
            )
        payment = Payment(saga_key=ctx.idempotency_key, customer_id=customer_id,
                          order_id=order_id, amount_cents=wanted)
        session.add(payment)
        session.flush()
        ctx.emit("payments.payment.charged", {"payment_id": payment.id, "amount_cents": wanted})
        return {"payment_id": payment.id, "amount_cents": wanted}


@saga_task("payments.refund_payment")
def refund_payment(ctx: StepContext, customer_id: str) -> dict[str, Any]:
    """Give the payment back to the balance; refunding twice gives nothing more."""
    with database.session() as session:
        payment = session.scalar(select(Payment).where(Payment.saga_key == ctx.action_key))
        if payment is None or payment.status == "refunded":
            return {"refunded_cents": 0}
        session.execute(
            update(Account)
            .where(Account.customer_id == payment.customer_id)
            .values(balance_cents=Account.balance_cents + payment.amount_cents)
        )
        payment.status = "refunded"
        ctx.emit("payments.payment.refunded", {"payment_id": payment.id,
                                               "amount_cents": payment.amount_cents})
        return {"payment_id": payment.id, "refunded_cents": payment.amount_cents}


@saga_task("payments.charge_backup_card")
def charge_backup_card(
    ctx: StepContext, customer_id: str, order_id: int, amount: str
) -> dict[str, Any]:
    """Charge the customer's backup card, once; refuse above what the card allows."""
    wanted = cents(amount)
    with database.session() as session:
        existing = session.scalar(
            select(BackupCharge).where(BackupCharge.saga_key == ctx.idempotency_key))
        if existing is not None:
            ctx.emit("payments.backup_card.charged", {"charge_id": existing.id,
                                                      "amount_cents": existing.amount_cents})
            return {"payment_id": existing.id, "amount_cents": existing.amount_cents,
                    "method": "backup_card"}
        taken = session.execute(
            update(BackupCard)
            .where(BackupCard.customer_id == customer_id, BackupCard.available_cents >= wanted)
            .values(available_cents=BackupCard.available_cents - wanted)
        )
        if taken.rowcount != 1:  # type: ignore[attr-defined]
            card = session.get(BackupCard, customer_id)
            if card is None:
                raise BackupCardDeclinedError(f"{customer_id} has no backup card",
                                              customer_id=customer_id)
            raise BackupCardDeclinedError(
                f"{customer_id}: {wanted / 100:.2f} asked, the backup card allows "
                f"{card.available_cents / 100:.2f}",
                customer_id=customer_id, amount_cents=wanted,
                available_cents=card.available_cents,
            )
        charge = BackupCharge(saga_key=ctx.idempotency_key, customer_id=customer_id,
                              order_id=order_id, amount_cents=wanted)
        session.add(charge)
        session.flush()
        ctx.emit("payments.backup_card.charged", {"charge_id": charge.id, "amount_cents": wanted})
        return {"payment_id": charge.id, "amount_cents": wanted, "method": "backup_card"}


@saga_task("payments.refund_backup_card")
def refund_backup_card(ctx: StepContext) -> dict[str, Any]:
    """Give a backup card charge back; refunding twice gives nothing more."""
    with database.session() as session:
        charge = session.scalar(
            select(BackupCharge).where(BackupCharge.saga_key == ctx.action_key))
        if charge is None or charge.status == "refunded":
            return {"refunded_cents": 0}
        session.execute(
            update(BackupCard)
            .where(BackupCard.customer_id == charge.customer_id)
            .values(available_cents=BackupCard.available_cents + charge.amount_cents)
        )
        charge.status = "refunded"
        ctx.emit("payments.backup_card.refunded", {"charge_id": charge.id,
                                                   "amount_cents": charge.amount_cents})
        return {"payment_id": charge.id, "refunded_cents": charge.amount_cents}
