"""What an action or compensation knows about the saga run it works for."""

from __future__ import annotations

from dataclasses import dataclass

from .status import Role


@dataclass(frozen=True)
class StepContext:
    """Passed as the first argument to every action and compensation.

    Pass ``idempotency_key`` to outside systems (a payment provider, a mailer) and key your
    own writes with it: Celery delivers at least once, so the same attempt may arrive twice,
    and the key is the same for every attempt and every delivery of this operation.
    """

    saga_id: str
    """The saga run's id."""
    saga_name: str
    """The saga's declared name."""
    step: str
    """The step's name."""
    role: Role
    """Whether this is the step's action or its compensation."""
    attempt: int
    """Which attempt this is, from 1."""
    correlation_id: str
    """The id shared by everything done for one business flow."""

    @property
    def idempotency_key(self) -> str:
        """A key stable across attempts and redeliveries of this step's action (or undo)."""
        return f"{self.saga_id}:{self.step}:{self.role.value}"

    @property
    def action_key(self) -> str:
        """The idempotency key of this step's action.

        A compensation uses it to find what its action did.
        """
        return f"{self.saga_id}:{self.step}:{Role.ACTION.value}"
