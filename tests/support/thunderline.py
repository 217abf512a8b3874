"""What the Thunderline saga tests share: a backend (engine and database), fresh rows for
each test, and a picture of everything a run may have left in the database.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select

from sagaline import Sagaline, SagaRun
from tasks.block.models import ACTIVE, SHADOW, SnapshotActivation, Storage, UpmSnapshot, Vault
from tasks.block.steps import DEFAULT_STORAGE
from tasks.bolt.models import UpmAdapter
from tasks.db import Database
from tasks.gate.models import MagicLinkToken, User
from tasks.link.models import Membership


@dataclass(frozen=True)
class Backend:
    """The project on one database: the engine to start sagas with, and the database the
    worker behind it writes to.
    """

    name: str
    engine: Sagaline
    db: Database


def new_email() -> str:
    """An address no other test uses."""
    return f"user.{uuid.uuid4().hex[:10]}@example.com"


def provisioning_effects(db: Database, run: SagaRun) -> dict[str, Any]:
    """Every row the provisioning run made, found by its idempotency keys."""
    mine = f"{run.saga_id}:%"
    with db.session() as session:
        tokens = list(session.scalars(select(MagicLinkToken)
                                      .where(MagicLinkToken.saga_key.like(mine))))
        return {
            "users": session.scalar(select(func.count()).select_from(User)
                                    .where(User.saga_key.like(mine))),
            "live_tokens": sum(t.revoked_at is None for t in tokens),
            "tokens": len(tokens),
            "vaults": session.scalar(select(func.count()).select_from(Vault)
                                     .where(Vault.saga_key.like(mine))),
            "memberships": session.scalar(select(func.count()).select_from(Membership)
                                          .where(Membership.saga_key.like(mine))),
        }


def allocated(db: Database) -> int:
    """Bytes of the default storage pool given to vaults."""
    with db.session() as session:
        storage = session.get(Storage, DEFAULT_STORAGE)
        assert storage is not None
        return storage.allocated_bytes


@dataclass(frozen=True)
class Family:
    """A model family of one test: its active snapshot, two adapters, a shadow snapshot."""

    name: str
    active: str
    shadow: str


def new_family(db: Database, drift: float = 0.05) -> Family:
    """A family no other test uses, with an active snapshot, two adapters serving it and a
    shadow snapshot to activate (``drift`` its drift score).
    """
    name = f"fam-{uuid.uuid4().hex[:8]}"
    family = Family(name, f"{name}-v1", f"{name}-v2")
    with db.session() as session:
        session.add(UpmSnapshot(id=family.active, family=name, status=ACTIVE, drift_score=0.01,
                                adapter_config={"dim": 128, "version": 1}))
        session.add(UpmSnapshot(id=family.shadow, family=name, status=SHADOW, drift_score=drift,
                                adapter_config={"dim": 256, "version": 2}))
        for n in (1, 2):
            session.add(UpmAdapter(id=f"{name}-adapter-{n}", family=name,
                                   snapshot_id=family.active,
                                   config={"dim": 128, "version": 1, "region": f"eu-{n}"}))
    return family


def add_shadow(db: Database, family: Family, suffix: str, drift: float = 0.05) -> str:
    """Another shadow snapshot of ``family``; its id."""
    snapshot_id = f"{family.name}-{suffix}"
    with db.session() as session:
        session.add(UpmSnapshot(id=snapshot_id, family=family.name, status=SHADOW,
                                drift_score=drift, adapter_config={"dim": 512}))
    return snapshot_id


def family_state(db: Database, family: Family) -> dict[str, Any]:
    """The family as the database has it: each snapshot's status, each adapter's snapshot
    and configuration, and any activation still under way.
    """
    with db.session() as session:
        snapshots = {s.id: s.status for s in session.scalars(
            select(UpmSnapshot).where(UpmSnapshot.family == family.name))}
        adapters = {a.id: (a.snapshot_id, dict(a.config)) for a in session.scalars(
            select(UpmAdapter).where(UpmAdapter.family == family.name))}
        under_way = session.scalar(select(func.count()).select_from(SnapshotActivation).where(
            SnapshotActivation.family == family.name,
            SnapshotActivation.state == "under_way"))
    return {"snapshots": snapshots, "adapters": adapters, "under_way": under_way}
