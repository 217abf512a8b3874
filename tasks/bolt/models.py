"""Bolt's tables: UPM adapters, and what each activation changed in them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from tasks.db import Base, utcnow


class UpmAdapter(Base):
    """An adapter serving a model family from one snapshot, with its own configuration."""

    __tablename__ = "bolt_upm_adapters"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    family: Mapped[str] = mapped_column(String(100), index=True)
    snapshot_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AdapterChange(Base):
    """An adapter as it was before an activation changed it.

    The snapshot it pointed at and its whole configuration, so the change can be undone
    exactly.
    """

    __tablename__ = "bolt_adapter_changes"
    __table_args__ = (UniqueConstraint("activation_key", "adapter_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    activation_key: Mapped[str] = mapped_column(String(200), index=True)
    adapter_id: Mapped[str] = mapped_column(String(64))
    previous_snapshot_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    previous_config: Mapped[dict[str, Any]] = mapped_column(JSON)
    restored: Mapped[bool] = mapped_column(default=False)
    changed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
