"""Link's part in user provisioning: the new user joins the default community."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from sagaline import StepContext, saga_task
from tasks.db import database
from tasks.ids import new_uuid7

from .models import DEFAULT_COMMUNITY, Community, Membership


@database.seeder
def seed_default_community(session: Session) -> None:
    """The community every new user joins."""
    if session.get(Community, DEFAULT_COMMUNITY) is None:
        session.add(Community(id=DEFAULT_COMMUNITY, name="Thunderline Commons"))


@saga_task("link.create_default_community")
def create_default_community(ctx: StepContext, user_id: str) -> dict[str, Any]:
    """Make the user a member of the default community (created if it is missing)."""
    with database.session() as session:
        membership = session.scalar(
            select(Membership).where(Membership.saga_key == ctx.idempotency_key))
        if membership is None:
            if session.get(Community, DEFAULT_COMMUNITY) is None:
                seed_default_community(session)
            membership = Membership(id=new_uuid7(), saga_key=ctx.idempotency_key,
                                    community_id=DEFAULT_COMMUNITY, user_id=user_id)
            session.add(membership)
        ctx.emit("link.membership.created", {"membership_id": membership.id,
                                             "community_id": membership.community_id,
                                             "user_id": user_id})
        return {"membership_id": membership.id, "community_id": membership.community_id}


@saga_task("link.remove_membership")
def remove_membership(ctx: StepContext, membership_id: str) -> dict[str, Any]:
    """Remove the membership the saga created (the seed left this undone)."""
    with database.session() as session:
        membership = session.get(Membership, membership_id)
        if membership is not None:
            session.delete(membership)
        ctx.emit("link.membership.removed", {"membership_id": membership_id})
        return {"membership_id": membership_id, "removed": True}
