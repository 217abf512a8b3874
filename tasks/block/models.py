"""Block's tables: users' vaults, the storage they come from, and UPM snapshots."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Float, Index, String, text
from sqlalchemy.orm import Mapped, mapped_column

from tasks.db import Base, utcnow

GIB = 1024**3
VAULT_QUOTA_BYTES = GIB
"""Every new user's vault: 1 GiB."""


class Storage(Base):
    """A pool of storage vaults are carved from; provisioning fails when it is full."""

    __tablename__ = "block_storage"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    capacity_bytes: Mapped[int] = mapped_column(BigInteger)
    allocated_bytes: Mapped[int] = mapped_column(BigInteger, default=0)


class Vault(Base):
    """A user's private storage: one per user."""

    __tablename__ = "block_vaults"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(36), unique=True)
    saga_key: Mapped[str] = mapped_column(String(200), unique=True)
    storage_id: Mapped[str] = mapped_column(String(64))
    quota_bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


SHADOW, ACTIVE, ARCHIVED = "shadow", "active", "archived"


class UpmSnapshot(Base):
    """A trained UPM model snapshot, ``shadow``, ``active`` or ``archived``.

    A snapshot is ``shadow`` until promoted, then ``active``, then ``archived`` when a newer
    one of its family takes over.

    At most one snapshot of a family is active: a partial unique index says so, so the
    database refuses a second one whatever the code does.
    """

    __tablename__ = "block_upm_snapshots"
    __table_args__ = (
        Index("one_active_snapshot_per_family", "family", unique=True,
              sqlite_where=text("status = 'active'"),
              postgresql_where=text("status = 'active'")),
    )
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    family: Mapped[str] = mapped_column(String(100), index=True)
    status: Mapped[str] = mapped_column(String(20), default=SHADOW)
    drift_score: Mapped[float] = mapped_column(Float)
    adapter_config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """What an adapter of this snapshot is configured with (merged into its own)."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class SnapshotActivation(Base):
    """One activation of a snapshot: which one it archived, and whether it is under way.

    Only one activation of a family is under way at a time (a partial unique index): a
    second concurrent one is refused instead of interleaving with the first.
    """

    __tablename__ = "block_snapshot_activations"
    __table_args__ = (
        Index("one_activation_under_way_per_family", "family", unique=True,
              sqlite_where=text("state = 'under_way'"),
              postgresql_where=text("state = 'under_way'")),
    )
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    saga_key: Mapped[str] = mapped_column(String(200), unique=True)
    family: Mapped[str] = mapped_column(String(100))
    snapshot_id: Mapped[str] = mapped_column(String(64))
    previous_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    state: Mapped[str] = mapped_column(String(20), default="under_way")
    """``under_way``, then ``done`` or ``undone``."""
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
