"""Running one reaction of a choreography (or its compensation) for one delivered event.

The subscriber tasks of a :class:`~sagaline.choreography.ChoreographySaga` call these; see
that module for the rules they follow.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import ConfigDict, validate_call

from . import _json
from .context import StepContext
from .events import Event, derived_id
from .status import Role
from .task import SagaTask

if TYPE_CHECKING:
    from .choreography import ChoreographySaga, Reaction


class ReactionRunner:
    """Runs one reaction (or its compensation) for one delivered event."""

    def __init__(self, saga: ChoreographySaga, reaction: Reaction) -> None:
        self.saga = saga
        self.reaction = reaction

    def _context(self, event: Event, role: Role, task: SagaTask) -> StepContext:
        return StepContext(
            saga_id=event.correlation_id, saga_name=self.saga.name, step=self.reaction.name,
            role=role, attempt=1, correlation_id=event.correlation_id, causation_id=event.id,
            source=task.name, event_check=self.saga.engine.check_event,
        )

    def _call(self, task: SagaTask, ctx: StepContext, payload: Mapping[str, Any]) -> Any:
        names = self.reaction.args
        arguments = {
            param: payload[names.get(param, param)] for param in task.parameters
            if names.get(param, param) in payload
        }
        call = validate_call(config=ConfigDict(arbitrary_types_allowed=True))(task.fn)
        return _json.jsonable(call(ctx, **arguments))

    def _publish(self, trigger: Event, ctx: StepContext, then: Event | None) -> None:
        events = [
            Event.new(e["name"], e["payload"], correlation_id=trigger.correlation_id,
                      causation_id=trigger.id, source=e["source"],
                      meta={"saga": self.saga.name, "reaction": self.reaction.name},
                      event_id=derived_id(trigger.occurred_at.timestamp(), trigger.id,
                                          ctx.role.value, self.reaction.name, str(i)))
            for i, e in enumerate(ctx.emitted)
        ]
        if then is not None:
            events.append(then)
        bus = self.saga.engine.bus
        assert bus is not None
        bus.publish(*events)

    def _follow_up(self, trigger: Event, name: str, payload: dict[str, Any], kind: str) -> Event:
        return Event.new(name, payload, correlation_id=trigger.correlation_id,
                         causation_id=trigger.id, source=self.reaction.run.name,
                         meta={"saga": self.saga.name, "reaction": self.reaction.name},
                         event_id=derived_id(trigger.occurred_at.timestamp(), trigger.id,
                                             kind, self.reaction.name))

    def react(self, event: Event) -> None:
        """Run the reaction for ``event``; emit its success event."""
        if not self.saga.owns(event):
            return
        cid = event.correlation_id
        if self.saga.get(cid).status != "running":
            return  # the flow failed or ended meanwhile: nothing new starts
        ctx = self._context(event, Role.ACTION, self.reaction.run)
        result = self._call(self.reaction.run, ctx, event.payload)
        payload = {**event.payload, **(result if isinstance(result, dict) else {
            self.reaction.name: result})}
        status = self.saga.flows.completed(cid, self.reaction.name, payload)
        if status != "running" and self.reaction.undo is not None:
            # The flow failed while this ran: undo it now, and emit nothing that goes on.
            self._publish(event, ctx, None)
            self.compensate_completed(event, payload)
            return
        follow = self._follow_up(event, self.reaction.emits, payload, "emits")
        self._publish(event, ctx, follow)

    def give_up(self, event: Event, error: Exception) -> None:
        """The reaction failed for good: turn the flow to compensating, emit the failure."""
        if not self.saga.owns(event):
            return
        payload = {**event.payload, "failed": self.reaction.name,
                   "error": {"type": type(error).__name__, "message": str(error)}}
        failure = self._follow_up(event, self.reaction.fails_with, payload, "fails_with")
        self.saga.flows.failed(event.correlation_id, failure.name, self.reaction.name)
        bus = self.saga.engine.bus
        assert bus is not None
        bus.publish(failure)

    def compensate(self, failure: Event) -> None:
        """On a failure event of the flow: undo this reaction if it completed, once."""
        if not self.saga.owns(failure):
            return
        flows, cid = self.saga.flows, failure.correlation_id
        if flows.was_undone(cid, self.reaction.name):
            return
        payload = flows.payload_of(cid, self.reaction.name)
        if payload is not None:
            self.compensate_completed(failure, payload)

    def compensate_completed(self, cause: Event, payload: Mapping[str, Any]) -> None:
        """Run the compensation with arguments from the reaction's own emitted payload."""
        undo = self.reaction.undo
        assert undo is not None
        ctx = self._context(cause, Role.COMPENSATION, undo)
        self._call(undo, ctx, payload)
        self._publish(cause, ctx, None)
        self.saga.flows.undone(cause.correlation_id, self.reaction.name, "completed")

    def compensation_gave_up(self, failure: Event, error: Exception) -> None:
        """The compensation failed for good: record it, so the flow can end."""
        if self.saga.owns(failure):
            self.saga.flows.undone(failure.correlation_id, self.reaction.name, "failed")
