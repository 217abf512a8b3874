"""The audit domain: a subscriber that keeps every order's events in a SQL table.

It shows what any subscriber of the bus must do: delivery is at least once, so it keys its
write with the event's id, and a second delivery of the same event writes nothing more.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Integer, String, select
from sqlalchemy.orm import Mapped, mapped_column

from sagaline import Event, subscriber

from .db import Base, database


class AuditEntry(Base):
    """One event of an order's flow, as the audit trail keeps it."""

    __tablename__ = "audit_entries"
    event_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    correlation_id: Mapped[str] = mapped_column(String(36), index=True)
    causation_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    deliveries: Mapped[int] = mapped_column(Integer, default=1)


@subscriber("orders.*", "inventory.*", "payments.*", "shipping.*", name="audit.record_event")
def record_event(event: Event) -> None:
    """Keep the event in the audit trail, once whatever the deliveries."""
    with database.session() as session:
        existing = session.get(AuditEntry, event.id)
        if existing is not None:
            existing.deliveries += 1
            return
        session.add(AuditEntry(
            event_id=event.id, name=event.name, correlation_id=event.correlation_id,
            causation_id=event.causation_id, payload=event.payload,
            occurred_at=event.occurred_at,
        ))


def audit_trail(correlation_id: str) -> list[AuditEntry]:
    """The audited events of one flow, oldest first."""
    with database.session() as session:
        rows = session.scalars(
            select(AuditEntry).where(AuditEntry.correlation_id == correlation_id)
            .order_by(AuditEntry.occurred_at, AuditEntry.event_id)
        ).all()
        session.expunge_all()
        return list(rows)
