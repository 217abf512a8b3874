"""Bolt's part in UPM activation: the drift gate, the adapters' sync, the announcement."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from sagaline import NonRetryableError, StepContext, saga_task
from tasks.block.models import UpmSnapshot
from tasks.block.steps import finish_activation
from tasks.db import database, utcnow

from .models import AdapterChange, UpmAdapter


class DriftExceededError(NonRetryableError):
    """Raised when a snapshot drifted further than the activation allows."""


@saga_task("bolt.validate_drift")
def validate_drift(ctx: StepContext, drift_score: float, max_drift_score: float
                   ) -> dict[str, Any]:
    """Refuse a snapshot whose drift score is over the limit, naming both."""
    if drift_score > max_drift_score:
        raise DriftExceededError(
            f"drift score {drift_score} exceeds the limit {max_drift_score}",
            drift_score=drift_score, max_drift_score=max_drift_score)
    return {"drift_score": drift_score, "max_drift_score": max_drift_score}


@saga_task("bolt.sync_adapters")
def sync_adapters(ctx: StepContext, snapshot_id: str, family: str) -> dict[str, Any]:
    """Point every adapter of the family at the snapshot, with its configuration merged in.

    Before changing an adapter, its snapshot and whole configuration are recorded (in the
    same transaction), so the compensation restores exactly what was there.
    """
    with database.session() as session:
        if _changes(session, ctx.idempotency_key):
            ids = [c.adapter_id for c in _changes(session, ctx.idempotency_key)]
            return {"adapters": ids, "count": len(ids)}
        snapshot = session.get(UpmSnapshot, snapshot_id)
        overrides = dict(snapshot.adapter_config) if snapshot is not None else {}
        adapters = list(session.scalars(select(UpmAdapter).where(UpmAdapter.family == family)
                                        .order_by(UpmAdapter.id).with_for_update()))
        for adapter in adapters:
            session.add(AdapterChange(activation_key=ctx.idempotency_key,
                                      adapter_id=adapter.id,
                                      previous_snapshot_id=adapter.snapshot_id,
                                      previous_config=dict(adapter.config)))
            adapter.snapshot_id = snapshot_id
            adapter.config = {**adapter.config, **overrides}
            adapter.updated_at = utcnow()
        ids = [a.id for a in adapters]
        ctx.emit("bolt.adapters.synced", {"snapshot_id": snapshot_id, "adapters": ids})
        return {"adapters": ids, "count": len(ids)}


@saga_task("bolt.restore_adapters")
def restore_adapters(ctx: StepContext) -> dict[str, Any]:
    """Put every adapter the sync changed back to its recorded snapshot and configuration."""
    with database.session() as session:
        restored = []
        for change in _changes(session, ctx.action_key):
            if change.restored:
                continue
            adapter = session.get(UpmAdapter, change.adapter_id)
            if adapter is not None:
                adapter.snapshot_id = change.previous_snapshot_id
                adapter.config = dict(change.previous_config)
                adapter.updated_at = utcnow()
            change.restored = True
            restored.append(change.adapter_id)
        ctx.emit("bolt.adapters.restored", {"adapters": restored})
        return {"adapters": restored, "count": len(restored)}


def _changes(session: Session, activation_key: str) -> list[AdapterChange]:
    return list(session.scalars(select(AdapterChange)
                                .where(AdapterChange.activation_key == activation_key)
                                .order_by(AdapterChange.id)))


@saga_task("bolt.emit_activation_event")
def emit_activation_event(ctx: StepContext, snapshot_id: str, family: str,
                          activation_id: str, previous_id: str | None,
                          adapters: list[str]) -> dict[str, Any]:
    """Close the activation and announce it: ``ai.upm.snapshot.activated``.

    Closing it frees the family for the next activation.
    """
    with database.session() as session:
        finish_activation(session, activation_id)
    payload = {"snapshot_id": snapshot_id, "family": family, "previous_id": previous_id,
               "adapters": adapters}
    ctx.emit("ai.upm.snapshot.activated", payload)
    return payload
