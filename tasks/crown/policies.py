"""Crown's policies, evaluated: may this snapshot be activated now?

Three kinds, each a row an operator keeps: a family's drift limit, freeze windows (of a
family or of all), and the number of distinct approvers a family's snapshots need. The
evaluation reads them all and returns every denial, each naming its policy and the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from tasks.db import as_utc

from .models import Approval, ApprovalRule, DriftLimit, FreezeWindow


@dataclass(frozen=True)
class Denial:
    """One policy that says no."""

    policy: str
    """Which policy, e.g. ``freeze_window:3`` or ``drift_limit:recsys``."""
    reason: str
    """Why, in words."""

    def __str__(self) -> str:
        """``policy: reason``."""
        return f"{self.policy}: {self.reason}"


@dataclass(frozen=True)
class Decision:
    """The policies' answer for one snapshot."""

    denials: tuple[Denial, ...]
    """Every policy that denies; none means approved."""
    checked: tuple[str, ...]
    """Every policy that applied."""

    @property
    def approved(self) -> bool:
        """Whether no policy denies."""
        return not self.denials


def evaluate(session: Session, *, snapshot_id: str, family: str, drift_score: float,
             now: datetime) -> Decision:
    """Evaluate every policy of ``family`` for activating ``snapshot_id`` at ``now``."""
    denials: list[Denial] = []
    checked: list[str] = []
    limit = session.get(DriftLimit, family)
    if limit is not None:
        checked.append(f"drift_limit:{family}")
        if drift_score > limit.max_drift:
            denials.append(Denial(f"drift_limit:{family}",
                                  f"drift score {drift_score} is over the family's limit "
                                  f"{limit.max_drift}"))
    windows = session.scalars(select(FreezeWindow).where(
        or_(FreezeWindow.family == family, FreezeWindow.family.is_(None))))
    for window in windows:
        checked.append(f"freeze_window:{window.id}")
        starts, ends = as_utc(window.starts_at), as_utc(window.ends_at)
        if starts <= as_utc(now) < ends:
            why = f" ({window.reason})" if window.reason else ""
            denials.append(Denial(f"freeze_window:{window.id}",
                                  f"activations of {window.family or 'every family'} are "
                                  f"frozen from {starts.isoformat()} to {ends.isoformat()}{why}"))
    rule = session.get(ApprovalRule, family)
    if rule is not None:
        checked.append(f"approvals:{family}")
        approvers = session.scalar(select(func.count(func.distinct(Approval.approver)))
                                   .where(Approval.snapshot_id == snapshot_id)) or 0
        if approvers < rule.required:
            denials.append(Denial(f"approvals:{family}",
                                  f"snapshot {snapshot_id} has {approvers} of the "
                                  f"{rule.required} approvals it needs"))
    return Decision(tuple(denials), tuple(checked))


def approve(session: Session, snapshot_id: str, approver: str) -> bool:
    """Record ``approver``'s approval of the snapshot; ``False`` if they had approved it."""
    existing = session.scalar(select(Approval).where(
        Approval.snapshot_id == snapshot_id, Approval.approver == approver))
    if existing is not None:
        return False
    session.add(Approval(snapshot_id=snapshot_id, approver=approver))
    return True
