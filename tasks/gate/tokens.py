"""Magic-link tokens: reserved by the saga, armed with a secret in the mail, redeemed once.

A token's secret is drawn when its mail is written and only its SHA-256 is stored, so the
secret exists in the mail alone. A token lasts one hour, is redeemed at most once, and can be
revoked.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from tasks.db import Database, as_utc, database, utcnow

from .models import MagicLinkToken, User

TOKEN_LIFETIME = timedelta(hours=1)
"""How long a magic link works after it is issued."""


class InvalidTokenError(ValueError):
    """Raised when a magic link cannot sign anyone in; the message says why."""


def new_secret() -> tuple[str, str]:
    """A fresh secret for a link, and the hash to store in its place."""
    secret = secrets.token_urlsafe(32)
    return secret, secret_hash(secret)


def secret_hash(secret: str) -> str:
    """The SHA-256 (hex) under which a secret is stored."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def redeem(secret: str, db: Database = database) -> str:
    """Sign in with a magic link's secret: the user's id, once.

    Raises:
        InvalidTokenError: The secret is unknown, revoked, used, expired, or its user is gone.
    """
    with db.session() as session:
        token = session.scalar(
            select(MagicLinkToken).where(MagicLinkToken.secret_hash == secret_hash(secret))
        )
        if token is None:
            raise InvalidTokenError("this link is not valid; ask for a new one")
        problem = _unusable(token)
        if problem:
            raise InvalidTokenError(f"this link {problem}; ask for a new one")
        user = _user(session, token.email)
        if user is None:
            raise InvalidTokenError("this link's account no longer exists")
        token.used_at = utcnow()
        return user.id


def _unusable(token: MagicLinkToken) -> str:
    if token.revoked_at is not None:
        return "was revoked"
    if token.used_at is not None:
        return "was already used"
    if as_utc(token.expires_at) <= utcnow():
        return "has expired"
    return ""


def _user(session: Session, email: str) -> User | None:
    return session.scalar(select(User).where(User.email == email))
