"""Crown's part in UPM activation: the policy gate (the seed approved everything)."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.orm import Session

from sagaline import NonRetryableError, StepContext, saga_task
from tasks.db import database, utcnow

from .policies import Decision, approve, evaluate

log = logging.getLogger("tasks.crown")

#: The signal an approver sends: ``{"approver": "ada"}`` (optionally with ``snapshot_id``).
APPROVAL_SIGNAL = "approval"


class PolicyDeniedError(NonRetryableError):
    """Raised when a policy denies an activation; the message names each and why."""


@saga_task("crown.policy_check")
def policy_check(ctx: StepContext, snapshot_id: str, family: str, drift_score: float,
                 approval_timeout_s: float) -> dict[str, Any]:
    """Evaluate the family's policies now; approve, deny with every reason, or wait.

    Approvals come as ``approval`` signals; each is recorded (an approver counts once).
    When approvals are all that is missing, the step waits for more, up to
    ``approval_timeout_s`` from its first wait, and is then denied. Any other denial (a
    drift limit, a freeze window) is final at once.
    """
    with database.session() as session:
        for signal in ctx.signals(APPROVAL_SIGNAL):
            record_approval(session, snapshot_id, signal)
    with database.session() as session:
        decision = evaluate(session, snapshot_id=snapshot_id, family=family,
                            drift_score=drift_score, now=utcnow())
    if not decision.approved:
        reasons = denied(snapshot_id, decision)
        if all(d.policy.startswith("approvals:") for d in decision.denials):
            ctx.wait_for(APPROVAL_SIGNAL, timeout=approval_timeout_s, reason=reasons)
        raise PolicyDeniedError(
            reasons, denials=[{"policy": d.policy, "reason": d.reason} for d in decision.denials])
    ctx.emit("crown.activation.approved", {"snapshot_id": snapshot_id, "family": family,
                                           "policies": list(decision.checked)})
    return {"approved": True, "policies": list(decision.checked)}


def denied(snapshot_id: str, decision: Decision) -> str:
    """Why the activation is denied, every policy named."""
    return (f"activation of snapshot {snapshot_id} denied by "
            + "; ".join(str(d) for d in decision.denials))


def record_approval(session: Session, snapshot_id: str, signal: dict[str, Any]) -> bool:
    """Record one ``approval`` signal's approver; ``False`` if it adds no approval.

    It adds none when it names no approver, names another snapshot, or was recorded before.
    """
    approver = signal.get("approver")
    meant_for = signal.get("snapshot_id", snapshot_id)
    if not isinstance(approver, str) or not approver.strip() or meant_for != snapshot_id:
        log.warning("approval signal for snapshot %s ignored: it needs an \"approver\" "
                    "(and, if it names one, this snapshot_id); got keys %s", snapshot_id,
                    sorted(signal))
        return False
    return approve(session, snapshot_id, approver.strip()[:200])
