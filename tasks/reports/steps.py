"""The shop report's steps: count a period's sales, keep the report, announce it.

Counting only reads the shop's tables; the report row is the one effect to undo.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from sagaline import NonRetryableError, StepContext, saga_task
from tasks.db import as_utc, database, utcnow
from tasks.orders import Order
from tasks.payments import Payment

from .models import ShopReport


class NotADateError(NonRetryableError):
    """Raised when a period's end has the form of a time but no such day (February 30)."""


@saga_task("reports.count_sales")
def count_sales(ctx: StepContext, period_end: str, hours: int) -> dict[str, Any]:
    """Count the orders of the ``hours`` up to ``period_end``, and their payments.

    With an empty ``period_end``, the period ends at the current minute. Payments count when
    captured (not refunded).
    """
    try:
        end = (as_utc(datetime.fromisoformat(period_end)) if period_end
               else utcnow().replace(second=0, microsecond=0))
    except ValueError:
        raise NotADateError(f"period_end {period_end!r} is no date; pass a real one, such as "
                            "'2026-12-04T10:00:00Z'", period_end=period_end) from None
    start = end - timedelta(hours=hours)
    in_period = (Order.created_at >= start) & (Order.created_at < end)
    with database.session() as session:
        orders, order_cents = session.execute(
            select(func.count(Order.id), func.coalesce(func.sum(Order.total_cents), 0))
            .where(in_period)).one()
        payments, payment_cents = session.execute(
            select(func.count(Payment.id), func.coalesce(func.sum(Payment.amount_cents), 0))
            .join(Order, Order.id == Payment.order_id)
            .where(in_period, Payment.status == "captured")).one()
    return {"period_start": start.isoformat(), "period_end": end.isoformat(),
            "orders": int(orders), "order_cents": int(order_cents),
            "payments": int(payments), "payment_cents": int(payment_cents)}


@saga_task("reports.store_report")
def store_report(ctx: StepContext, sales: dict[str, Any]) -> dict[str, Any]:
    """Keep the report (once per saga, whatever the redeliveries)."""
    with database.session() as session:
        report = session.scalar(
            select(ShopReport).where(ShopReport.saga_key == ctx.idempotency_key))
        if report is None:
            report = ShopReport(
                saga_key=ctx.idempotency_key,
                period_start=datetime.fromisoformat(sales["period_start"]),
                period_end=datetime.fromisoformat(sales["period_end"]),
                orders=sales["orders"], order_cents=sales["order_cents"],
                payments=sales["payments"], payment_cents=sales["payment_cents"])
            session.add(report)
            session.flush()
        return {"report_id": report.id}


@saga_task("reports.delete_report")
def delete_report(ctx: StepContext) -> dict[str, Any]:
    """Delete the report the saga kept; deleting twice deletes nothing more."""
    with database.session() as session:
        report = session.scalar(select(ShopReport).where(ShopReport.saga_key == ctx.action_key))
        if report is None:
            return {"deleted": 0}
        session.delete(report)
        return {"deleted": 1, "report_id": report.id}


@saga_task("reports.publish_report")
def publish_report(ctx: StepContext, report_id: int, sales: dict[str, Any]) -> dict[str, Any]:
    """Announce the report to the bus's subscribers."""
    ctx.emit("reports.report.published", {
        "report_id": report_id, "period_end": sales["period_end"], "orders": sales["orders"],
        "payments": sales["payments"], "payment_cents": sales["payment_cents"]})
    return {"report_id": report_id}
