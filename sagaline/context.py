"""What an action or compensation knows about the saga run it works for."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .errors import SagaCancelledError
from .status import Role


def _never() -> bool:
    return False


@dataclass(frozen=True)
class StepContext:
    """Passed as the first argument to every action and compensation.

    Pass ``idempotency_key`` to outside systems (a payment provider, a mailer) and key your
    own writes with it: Celery delivers at least once, so the same attempt may arrive twice,
    and the key is the same for every attempt and every delivery of this operation.

    A long action should call :meth:`raise_if_cancelled` between units of work (an epoch, a
    batch): when the saga is cancelled, or passes its deadline, or this attempt lost its
    lease, it stops there, and whatever it completed is compensated.
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
    cancel_check: Callable[[], bool] = field(default=_never, repr=False, compare=False)
    """Answers whether this attempt should stop; use :meth:`cancelled`."""
    undoes_fallback: bool = False
    """Whether this compensation undoes the step's fallback (rather than its action)."""

    @property
    def idempotency_key(self) -> str:
        """A key stable across attempts and redeliveries of this step's action (or undo)."""
        return f"{self.saga_id}:{self.step}:{self.role.value}"

    @property
    def action_key(self) -> str:
        """The idempotency key of what this compensation undoes.

        That is the step's action, or its fallback when that is what completed; a
        compensation uses it to find what its action did.
        """
        done = Role.FALLBACK if self.undoes_fallback else Role.ACTION
        return f"{self.saga_id}:{self.step}:{done.value}"

    def cancelled(self) -> bool:
        """Whether this attempt should stop (the saga was cancelled or its lease lost)."""
        return self.cancel_check()

    def raise_if_cancelled(self) -> None:
        """Stop here if :meth:`cancelled`.

        Raises:
            SagaCancelledError: The attempt should stop.
        """
        if self.cancelled():
            raise SagaCancelledError(
                f"saga {self.saga_id} was cancelled (or lost its lease) during {self.step}"
            )
