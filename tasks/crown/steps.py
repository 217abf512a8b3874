"""Crown's part in UPM activation: the policy gate (the seed approved everything)."""

from __future__ import annotations

from typing import Any

from sagaline import NonRetryableError, StepContext, saga_task
from tasks.db import database, utcnow

from .policies import evaluate


class PolicyDeniedError(NonRetryableError):
    """Raised when a policy denies an activation; the message names each and why."""


@saga_task("crown.policy_check")
def policy_check(ctx: StepContext, snapshot_id: str, family: str,
                 drift_score: float) -> dict[str, Any]:
    """Evaluate the family's policies now; deny with every reason, or approve."""
    with database.session() as session:
        decision = evaluate(session, snapshot_id=snapshot_id, family=family,
                            drift_score=drift_score, now=utcnow())
    if not decision.approved:
        raise PolicyDeniedError(
            f"activation of snapshot {snapshot_id} denied by "
            + "; ".join(str(d) for d in decision.denials),
            denials=[{"policy": d.policy, "reason": d.reason} for d in decision.denials])
    ctx.emit("crown.activation.approved", {"snapshot_id": snapshot_id, "family": family,
                                           "policies": list(decision.checked)})
    return {"approved": True, "policies": list(decision.checked)}
