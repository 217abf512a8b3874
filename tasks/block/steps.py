"""Block's part in the sagas: a new user's vault, and a UPM snapshot's promotion."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from sagaline import NonRetryableError, StepContext, saga_task
from tasks.db import database
from tasks.ids import new_uuid7

from .models import (
    ACTIVE,
    ARCHIVED,
    GIB,
    SHADOW,
    VAULT_QUOTA_BYTES,
    SnapshotActivation,
    Storage,
    UpmSnapshot,
    Vault,
)

DEFAULT_STORAGE = "default"
"""The storage pool vaults are carved from."""


class StorageFullError(NonRetryableError):
    """Raised when the storage pool has no room left for another vault."""


class SnapshotNotShadowError(NonRetryableError):
    """Raised when a snapshot to activate is not a shadow snapshot (or does not exist)."""


class ActivationUnderWayError(NonRetryableError):
    """Raised when another activation of the same family is under way."""


@database.seeder
def seed_storage(session: Session) -> None:
    """The default storage pool: room for 1,024 vaults."""
    if session.get(Storage, DEFAULT_STORAGE) is None:
        session.add(Storage(id=DEFAULT_STORAGE, capacity_bytes=1024 * GIB, allocated_bytes=0))


@saga_task("block.provision_vault")
def provision_vault(ctx: StepContext, user_id: str) -> dict[str, Any]:
    """Give the user a 1 GiB vault from the default storage pool."""
    with database.session() as session:
        vault = session.scalar(select(Vault).where(Vault.saga_key == ctx.idempotency_key))
        if vault is None:
            storage = session.get(Storage, DEFAULT_STORAGE)
            free = 0 if storage is None else storage.capacity_bytes - storage.allocated_bytes
            if storage is None or free < VAULT_QUOTA_BYTES:
                raise StorageFullError(
                    f"storage {DEFAULT_STORAGE!r} has {free // GIB} GiB free, a vault needs "
                    f"{VAULT_QUOTA_BYTES // GIB} GiB; add capacity", free_bytes=free)
            storage.allocated_bytes += VAULT_QUOTA_BYTES
            vault = Vault(id=new_uuid7(), user_id=user_id, saga_key=ctx.idempotency_key,
                          storage_id=DEFAULT_STORAGE, quota_bytes=VAULT_QUOTA_BYTES)
            session.add(vault)
        ctx.emit("block.vault.provisioned", {"vault_id": vault.id, "user_id": user_id,
                                             "quota_bytes": vault.quota_bytes})
        return {"vault_id": vault.id, "quota_bytes": vault.quota_bytes}


@saga_task("block.deprovision_vault")
def deprovision_vault(ctx: StepContext, vault_id: str) -> dict[str, Any]:
    """Remove the vault and give its space back to the pool."""
    with database.session() as session:
        vault = session.get(Vault, vault_id)
        if vault is not None:
            session.execute(
                update(Storage).where(Storage.id == vault.storage_id)
                .values(allocated_bytes=Storage.allocated_bytes - vault.quota_bytes))
            session.delete(vault)
        ctx.emit("block.vault.deprovisioned", {"vault_id": vault_id})
        return {"vault_id": vault_id, "deprovisioned": True}


@saga_task("block.load_snapshot")
def load_snapshot(ctx: StepContext, snapshot_id: str) -> dict[str, Any]:
    """The shadow snapshot to activate: its family, drift score and status."""
    with database.session() as session:
        snapshot = session.get(UpmSnapshot, snapshot_id)
        if snapshot is None:
            raise SnapshotNotShadowError(f"snapshot {snapshot_id!r} does not exist",
                                         field="snapshot_id")
        if snapshot.status != SHADOW:
            raise SnapshotNotShadowError(
                f"snapshot {snapshot_id!r} is {snapshot.status}, not shadow; only a shadow "
                "snapshot can be activated", status=snapshot.status)
        return {"snapshot_id": snapshot.id, "family": snapshot.family,
                "drift_score": snapshot.drift_score, "status": snapshot.status}


@saga_task("block.deactivate_previous")
def deactivate_previous(ctx: StepContext, snapshot_id: str, family: str) -> dict[str, Any]:
    """Claim the family for this activation and archive its active snapshot, if any.

    The claim is a row only one activation of a family may hold (the database refuses a
    second), so two activations at once cannot interleave: the second fails here.
    """
    with database.session() as session:
        claim = session.scalar(select(SnapshotActivation)
                               .where(SnapshotActivation.saga_key == ctx.idempotency_key))
        if claim is not None:
            return {"activation_id": claim.id, "previous_id": claim.previous_id}
        previous = session.scalar(select(UpmSnapshot).where(
            UpmSnapshot.family == family, UpmSnapshot.status == ACTIVE))
        claim = SnapshotActivation(id=new_uuid7(), saga_key=ctx.idempotency_key,
                                   family=family, snapshot_id=snapshot_id,
                                   previous_id=previous.id if previous else None)
        session.add(claim)
        try:
            session.flush()
        except IntegrityError as error:
            raise ActivationUnderWayError(
                f"another activation of family {family!r} is under way; try again when it "
                "has ended", family=family) from error
        if previous is not None:
            previous.status = ARCHIVED
            ctx.emit("block.snapshot.archived", {"snapshot_id": previous.id, "family": family})
        return {"activation_id": claim.id, "previous_id": claim.previous_id}


@saga_task("block.restore_previous")
def restore_previous(ctx: StepContext, activation_id: str) -> dict[str, Any]:
    """Make the snapshot this activation archived active again, and release the family."""
    with database.session() as session:
        claim = session.get(SnapshotActivation, activation_id)
        if claim is None or claim.state == "undone":
            return {"activation_id": activation_id, "restored": None}
        if claim.previous_id is not None:
            session.execute(update(UpmSnapshot).where(UpmSnapshot.id == claim.previous_id)
                            .values(status=ACTIVE))
            ctx.emit("block.snapshot.restored", {"snapshot_id": claim.previous_id,
                                                 "family": claim.family})
        claim.state = "undone"
        return {"activation_id": activation_id, "restored": claim.previous_id}


@saga_task("block.activate_snapshot")
def activate_snapshot(ctx: StepContext, snapshot_id: str) -> dict[str, Any]:
    """Make the snapshot its family's active one (the database allows one at a time)."""
    with database.session() as session:
        snapshot = session.get(UpmSnapshot, snapshot_id)
        if snapshot is None or snapshot.status not in (SHADOW, ACTIVE):
            raise SnapshotNotShadowError(f"snapshot {snapshot_id!r} cannot be activated now")
        snapshot.status = ACTIVE
        try:
            session.flush()
        except IntegrityError as error:
            raise NonRetryableError(
                f"family {snapshot.family!r} already has an active snapshot",
                family=snapshot.family) from error
        ctx.emit("block.snapshot.activated", {"snapshot_id": snapshot_id,
                                              "family": snapshot.family})
        return {"snapshot_id": snapshot_id, "status": ACTIVE}


@saga_task("block.revert_to_shadow")
def revert_to_shadow(ctx: StepContext, snapshot_id: str) -> dict[str, Any]:
    """Put the snapshot back to shadow."""
    with database.session() as session:
        session.execute(update(UpmSnapshot).where(UpmSnapshot.id == snapshot_id)
                        .values(status=SHADOW))
        ctx.emit("block.snapshot.reverted", {"snapshot_id": snapshot_id})
        return {"snapshot_id": snapshot_id, "status": SHADOW}


def finish_activation(session: Session, activation_id: str) -> None:
    """Mark an activation done, releasing its family for the next one."""
    session.execute(update(SnapshotActivation).where(SnapshotActivation.id == activation_id)
                    .values(state="done"))
