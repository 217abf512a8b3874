"""The reports' table: one row per report, written once per saga."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from tasks.db import Base, utcnow


class ShopReport(Base):
    """What the shop sold from ``period_start`` (included) to ``period_end`` (excluded)."""

    __tablename__ = "reports_shop"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    saga_key: Mapped[str] = mapped_column(String(200), unique=True)
    period_start: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    period_end: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    orders: Mapped[int] = mapped_column(Integer)
    """Orders created in the period, whatever their status now."""
    order_cents: Mapped[int] = mapped_column(Integer)
    """Their totals, in cents."""
    payments: Mapped[int] = mapped_column(Integer)
    """Payments captured (not refunded) for those orders."""
    payment_cents: Mapped[int] = mapped_column(Integer)
    """What those payments took, in cents."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
