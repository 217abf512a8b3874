"""UPM activation, as in Thunderline's Reactor saga: Bolt → Crown → Block.

Load the shadow snapshot, check its drift, ask Crown's policies (the seed approved
everything; when only approvals are missing, Crown waits for ``approval`` signals until
enough distinct approvers approved, or its timeout denies it), archive the family's active
snapshot, activate this one, point the family's adapters at it, announce it. A failure
undoes what was done, last first: the adapters get back exactly the snapshot and
configuration they had (the seed left this undone), the snapshot goes back to shadow, the
archived one becomes active again.

Two activations of one family never interleave: archiving the active snapshot first claims
the family, and the database lets one activation hold that claim at a time.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel, Field

from sagaline import NO_RETRY, Domains, FromInput, FromStep, RetryPolicy, Saga, Step
from tasks.block.steps import (
    activate_snapshot,
    deactivate_previous,
    load_snapshot,
    restore_previous,
    revert_to_shadow,
)
from tasks.bolt.steps import (
    emit_activation_event,
    restore_adapters,
    sync_adapters,
    validate_drift,
)
from tasks.crown.steps import policy_check


class ActivationInput(BaseModel):
    """Which snapshot to activate, and the most drift to accept."""

    snapshot_id: str = Field(min_length=1, max_length=64)
    max_drift_score: float = Field(default=0.15, ge=0, le=1)
    approval_timeout_s: float = Field(default=86_400, gt=0, le=7 * 86_400)
    """How long Crown waits for missing approvals (``approval`` signals) before it denies."""


SNAPSHOT_ID = FromInput("snapshot_id")
FAMILY = FromStep("load_snapshot", "family")
DRIFT = FromStep("load_snapshot", "drift_score")
ACTIVATION_ID = FromStep("deactivate_previous", "activation_id")
QUICK_RETRY = RetryPolicy(attempts=3, initial=timedelta(milliseconds=200))

upm_activation = Saga(
    "upm_activation",
    description="Promote a shadow UPM snapshot to active and move its adapters onto it.",
    inputs=ActivationInput,
    domains=Domains("bolt", "crown", "block", reason="model promotion needs training "
                    "(bolt), policy (crown) and persistence (block)"),
    steps=[
        Step("load_snapshot", load_snapshot, args={"snapshot_id": SNAPSHOT_ID},
             retry=QUICK_RETRY),
        Step("validate_drift", validate_drift,
             args={"drift_score": DRIFT, "max_drift_score": FromInput("max_drift_score")},
             retry=NO_RETRY),
        Step("policy_check", policy_check,  # waits for `approval` signals when short of them
             args={"snapshot_id": SNAPSHOT_ID, "family": FAMILY, "drift_score": DRIFT,
                   "approval_timeout_s": FromInput("approval_timeout_s")},
             retry=QUICK_RETRY),
        Step("deactivate_previous", deactivate_previous, compensation=restore_previous,
             args={"snapshot_id": SNAPSHOT_ID, "family": FAMILY},
             compensation_args={"activation_id": ACTIVATION_ID}, retry=QUICK_RETRY),
        Step("activate_snapshot", activate_snapshot, compensation=revert_to_shadow,
             args={"snapshot_id": SNAPSHOT_ID}, retry=QUICK_RETRY),
        Step("sync_adapters", sync_adapters, compensation=restore_adapters,
             args={"snapshot_id": SNAPSHOT_ID, "family": FAMILY}, compensation_args={},
             retry=QUICK_RETRY),
        Step("emit_activation_event", emit_activation_event,
             args={"snapshot_id": SNAPSHOT_ID, "family": FAMILY,
                   "activation_id": ACTIVATION_ID,
                   "previous_id": FromStep("deactivate_previous", "previous_id"),
                   "adapters": FromStep("sync_adapters", "adapters")},
             retry=QUICK_RETRY),
    ],
    returns={"snapshot_id": SNAPSHOT_ID, "family": FAMILY,
             "adapters": FromStep("sync_adapters", "adapters")},
    step_time_limit=timedelta(seconds=30),
)
