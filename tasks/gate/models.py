"""Gate's tables: users and their magic-link tokens."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, String
from sqlalchemy.orm import Mapped, mapped_column

from tasks.db import Base, utcnow


class User(Base):
    """A person who can sign in; one per email address."""

    __tablename__ = "gate_users"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    saga_key: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class MagicLinkToken(Base):
    """A one-hour sign-in link for an email address, stored only as a hash.

    The token is reserved first (its id, address and expiry); its secret is drawn when the
    mail is written, and only the secret's SHA-256 is kept: the secret itself is in the
    mail and nowhere else (not in the saga's record, not in a log).
    """

    __tablename__ = "gate_magic_link_tokens"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    """A UUIDv7."""
    saga_key: Mapped[str] = mapped_column(String(200), unique=True)
    email: Mapped[str] = mapped_column(String(320), index=True)
    redirect: Mapped[str] = mapped_column(String(2000))
    secret_hash: Mapped[str | None] = mapped_column(String(64), unique=True, nullable=True)
    correlation_id: Mapped[str] = mapped_column(String(36))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
