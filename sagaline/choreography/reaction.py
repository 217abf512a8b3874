"""One participant of a choreography, as declared: on an event, run a task, emit an event."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from sagaline.task import SagaTask


@dataclass(frozen=True)
class Reaction:
    """One participant of a choreography: on an event, run a task, emit an event.

    Example:
        >>> Reaction(on="checkout.order.created", run=reserve_inventory,
        ...          emits="checkout.stock.reserved", fails_with="checkout.stock.unavailable",
        ...          undo=release_inventory)
    """

    on: str
    """The event it reacts to."""
    run: SagaTask
    """What it does: called with the arguments it takes from the event's payload."""
    emits: str
    """The event it publishes when ``run`` succeeds (payload: the trigger's plus the result)."""
    fails_with: str
    """The event it publishes when ``run`` gives up; it starts the compensations."""
    undo: SagaTask | None = None
    """What undoes ``run`` once it completed; ``None`` when there is nothing to undo."""
    args: Mapping[str, str] = field(default_factory=dict)
    """Argument name → payload key, where they differ (``{"amount": "total_amount"}``)."""
    max_retries: int = 3
    """How often a failing ``run`` (or ``undo``) is retried before it gives up."""

    @property
    def name(self) -> str:
        """The reaction's name: its task's, without the domain."""
        return self.run.short_name
