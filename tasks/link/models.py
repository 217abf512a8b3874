"""Link's tables: communities and who belongs to them."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from tasks.db import Base, utcnow

DEFAULT_COMMUNITY = "commons"
"""The community every new user joins."""


class Community(Base):
    """A community users can belong to."""

    __tablename__ = "link_communities"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))


class Membership(Base):
    """A user's membership of a community."""

    __tablename__ = "link_memberships"
    __table_args__ = (UniqueConstraint("community_id", "user_id"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    saga_key: Mapped[str] = mapped_column(String(200), unique=True)
    community_id: Mapped[str] = mapped_column(ForeignKey("link_communities.id"))
    user_id: Mapped[str] = mapped_column(String(36), index=True)
    role: Mapped[str] = mapped_column(String(20), default="member")
    joined_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
