"""Crown's tables: the policies a UPM snapshot's activation must pass."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Float, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from tasks.db import Base, utcnow


class DriftLimit(Base):
    """The highest drift score a family's snapshot may be activated with."""

    __tablename__ = "crown_drift_limits"
    family: Mapped[str] = mapped_column(String(100), primary_key=True)
    max_drift: Mapped[float] = mapped_column(Float)


class FreezeWindow(Base):
    """A time during which no snapshot of a family may be activated.

    A window whose ``family`` is None freezes every family.
    """

    __tablename__ = "crown_freeze_windows"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    family: Mapped[str | None] = mapped_column(String(100), nullable=True)
    starts_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ends_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    reason: Mapped[str] = mapped_column(String(500), default="")


class ApprovalRule(Base):
    """How many distinct people must approve a family's snapshot before it is activated."""

    __tablename__ = "crown_approval_rules"
    family: Mapped[str] = mapped_column(String(100), primary_key=True)
    required: Mapped[int] = mapped_column(Integer)


class Approval(Base):
    """One person's approval of one snapshot; a second by the same person counts once."""

    __tablename__ = "crown_approvals"
    __table_args__ = (UniqueConstraint("snapshot_id", "approver"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    snapshot_id: Mapped[str] = mapped_column(String(64), index=True)
    approver: Mapped[str] = mapped_column(String(200))
    approved_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
