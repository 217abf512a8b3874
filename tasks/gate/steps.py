"""Gate's part in user provisioning, and the undoing of each.

Check the address, reserve a token, create the user, mail the link, announce the
onboarding.
"""

from __future__ import annotations

from typing import Any

import email_validator
from sqlalchemy import select

from sagaline import NonRetryableError, StepContext, saga_task
from tasks.db import database, utcnow
from tasks.ids import new_uuid7

from .mail import magic_link_mail, mailer
from .models import MagicLinkToken, User
from .tokens import TOKEN_LIFETIME, new_secret


class InvalidEmailError(NonRetryableError):
    """Raised when an address is not one a mail could be sent to."""


class EmailTakenError(NonRetryableError):
    """Raised when a user with the address already exists."""


@saga_task("gate.validate_email")
def validate_email(ctx: StepContext, email: str) -> dict[str, Any]:
    """Check the address's syntax (no DNS lookup) and return its normalised form."""
    try:
        valid = email_validator.validate_email(email, check_deliverability=False)
    except email_validator.EmailNotValidError as error:
        raise InvalidEmailError(f"email {email!r} is not valid: {error}", field="email") from error
    return {"email": valid.normalized}


@saga_task("gate.generate_token")
def generate_token(ctx: StepContext, email: str, redirect: str) -> dict[str, Any]:
    """Reserve a one-hour magic-link token for the address (its secret is drawn at mailing)."""
    with database.session() as session:
        token = session.scalar(
            select(MagicLinkToken).where(MagicLinkToken.saga_key == ctx.idempotency_key))
        if token is None:
            now = utcnow()
            token = MagicLinkToken(
                id=new_uuid7(), saga_key=ctx.idempotency_key, email=email, redirect=redirect,
                correlation_id=ctx.correlation_id, created_at=now,
                expires_at=now + TOKEN_LIFETIME)
            session.add(token)
        ctx.emit("gate.token.issued", {"token_id": token.id})
        return {"token_id": token.id, "expires_at": token.expires_at.isoformat()}


@saga_task("gate.revoke_token")
def revoke_token(ctx: StepContext, token_id: str) -> dict[str, Any]:
    """Revoke the token, so that no link made from it ever signs anyone in."""
    with database.session() as session:
        token = session.get(MagicLinkToken, token_id)
        if token is not None and token.revoked_at is None:
            token.revoked_at = utcnow()
        ctx.emit("gate.token.revoked", {"token_id": token_id})
        return {"token_id": token_id, "revoked": True}


@saga_task("gate.create_user")
def create_user(ctx: StepContext, email: str) -> dict[str, Any]:
    """Create the user (once per saga, whatever the redeliveries)."""
    with database.session() as session:
        user = session.scalar(select(User).where(User.saga_key == ctx.idempotency_key))
        if user is None:
            if session.scalar(select(User.id).where(User.email == email)) is not None:
                raise EmailTakenError(f"a user with email {email!r} already exists",
                                      field="email")
            user = User(id=new_uuid7(), email=email, saga_key=ctx.idempotency_key)
            session.add(user)
        ctx.emit("gate.user.created", {"user_id": user.id})
        return {"user_id": user.id}


@saga_task("gate.delete_user")
def delete_user(ctx: StepContext, user_id: str) -> dict[str, Any]:
    """Delete the user the saga created."""
    with database.session() as session:
        user = session.get(User, user_id)
        if user is not None:
            session.delete(user)
        ctx.emit("gate.user.deleted", {"user_id": user_id})
        return {"user_id": user_id, "deleted": True}


@saga_task("gate.send_magic_link")
def send_magic_link(ctx: StepContext, token_id: str, email: str) -> dict[str, Any]:
    """Mail the sign-in link, with the flow's ids in its headers: the saga's pivot.

    The secret is drawn here and only its hash stored, once the mail is out. A redelivery
    after that sends nothing; one before it sends a new link (the unsent one never worked).
    """
    with database.session() as session:
        token = session.get(MagicLinkToken, token_id)
        if token is None or token.revoked_at is not None:
            raise NonRetryableError(f"token {token_id} was revoked; no link is sent")
        if token.sent_at is not None:
            return {"token_id": token_id, "sent_at": token.sent_at.isoformat()}
        redirect = token.redirect
    secret, hashed = new_secret()
    message = magic_link_mail(mailer, to=email, link=mailer.link(secret, redirect),
                              headers=ctx.outgoing_headers())
    mailer.send(message)
    with database.session() as session:
        token = session.get(MagicLinkToken, token_id)
        assert token is not None
        token.secret_hash, token.sent_at = hashed, utcnow()
        ctx.emit("gate.magic_link.sent", {"token_id": token_id,
                                          "message_id": message["Message-ID"]})
        return {"token_id": token_id, "sent_at": token.sent_at.isoformat()}


@saga_task("gate.emit_onboarding_event")
def emit_onboarding_event(ctx: StepContext, user_id: str, vault_id: str,
                          community_id: str) -> dict[str, Any]:
    """Announce that the user is onboarded: ``user.onboarding.completed``."""
    payload = {"user_id": user_id, "vault_id": vault_id, "community_id": community_id}
    ctx.emit("user.onboarding.completed", payload)
    return payload
