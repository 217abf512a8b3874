"""Running one reaction of a choreography (or its compensation) for one delivered event.

The subscriber tasks of a :class:`~sagaline.choreography.ChoreographySaga` call these; see
that module for the rules they follow.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ConfigDict, validate_call

from sagaline import codec
from sagaline.choreography.flows import FlowStore
from sagaline.choreography.reaction import Reaction
from sagaline.context import StepContext
from sagaline.events.bus import EventBus
from sagaline.events.canonical import Event
from sagaline.ids import derived_id
from sagaline.runtime.attempt import EventCheck
from sagaline.status import Role
from sagaline.task import SagaTask


class ReactionRunner:
    """Runs one reaction (or its compensation) for one delivered event.

    Args:
        saga: The choreography's name.
        reaction: The reaction it runs.
        flows: The records of the choreography's flows.
        bus: Where its events go.
        check_event: Checks each event the reaction's task emits.
    """

    def __init__(self, saga: str, reaction: Reaction, flows: FlowStore, bus: EventBus,
                 check_event: EventCheck) -> None:
        """Run ``reaction`` of the choreography ``saga``."""
        self.saga = saga
        self.reaction = reaction
        self.flows = flows
        self.bus = bus
        self.check_event = check_event

    def _owns(self, event: Event) -> bool:
        """Whether the event belongs to a flow of this choreography."""
        return bool(self.flows.saga_of(event.correlation_id) == self.saga)

    def _context(self, event: Event, role: Role, task: SagaTask) -> StepContext:
        return StepContext(
            saga_id=event.correlation_id, saga_name=self.saga, step=self.reaction.name,
            role=role, attempt=1, correlation_id=event.correlation_id, causation_id=event.id,
            source=task.name, event_check=self.check_event,
        )

    def _call(self, task: SagaTask, ctx: StepContext, payload: Mapping[str, Any]) -> Any:
        names = self.reaction.args
        arguments = {
            param: payload[names.get(param, param)] for param in task.parameters
            if names.get(param, param) in payload
        }
        call = validate_call(config=ConfigDict(arbitrary_types_allowed=True))(task.fn)
        return codec.jsonable(call(ctx, **arguments))

    def _publish(self, trigger: Event, ctx: StepContext, then: Event | None) -> None:
        events = [
            Event.new(e["name"], e["payload"], correlation_id=trigger.correlation_id,
                      causation_id=trigger.id, source=e["source"],
                      meta={"saga": self.saga, "reaction": self.reaction.name},
                      event_id=derived_id(trigger.occurred_at.timestamp(), trigger.id,
                                          ctx.role.value, self.reaction.name, str(i)))
            for i, e in enumerate(ctx.emitted)
        ]
        if then is not None:
            events.append(then)
        self.bus.publish(*events)

    def _follow_up(self, trigger: Event, name: str, payload: dict[str, Any], kind: str) -> Event:
        return Event.new(name, payload, correlation_id=trigger.correlation_id,
                         causation_id=trigger.id, source=self.reaction.run.name,
                         meta={"saga": self.saga, "reaction": self.reaction.name},
                         event_id=derived_id(trigger.occurred_at.timestamp(), trigger.id,
                                             kind, self.reaction.name))

    def react(self, event: Event) -> None:
        """Run the reaction for ``event``; emit its success event."""
        if not self._owns(event):
            return
        cid = event.correlation_id
        flow = self.flows.get(cid)
        if flow is None or flow.status != "running":
            return  # the flow failed or ended meanwhile: nothing new starts
        ctx = self._context(event, Role.ACTION, self.reaction.run)
        result = self._call(self.reaction.run, ctx, event.payload)
        payload = {**event.payload, **(result if isinstance(result, dict) else {
            self.reaction.name: result})}
        status = self.flows.completed(cid, self.reaction.name, payload)
        if status != "running" and self.reaction.undo is not None:
            # The flow failed while this ran: undo it now, and emit nothing that goes on.
            self._publish(event, ctx, None)
            self.compensate_completed(event, payload)
            return
        follow = self._follow_up(event, self.reaction.emits, payload, "emits")
        self._publish(event, ctx, follow)

    def give_up(self, event: Event, error: Exception) -> None:
        """The reaction failed for good: turn the flow to compensating, emit the failure."""
        if not self._owns(event):
            return
        payload = {**event.payload, "failed": self.reaction.name,
                   "error": {"type": type(error).__name__, "message": str(error)}}
        failure = self._follow_up(event, self.reaction.fails_with, payload, "fails_with")
        self.flows.failed(event.correlation_id, failure.name, self.reaction.name)
        self.bus.publish(failure)

    def compensate(self, failure: Event) -> None:
        """On a failure event of the flow: undo this reaction if it completed, once."""
        if not self._owns(failure):
            return
        flows, cid = self.flows, failure.correlation_id
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
        self.flows.undone(cause.correlation_id, self.reaction.name, "completed")

    def compensation_gave_up(self, failure: Event, error: Exception) -> None:
        """The compensation failed for good: record it, so the flow can end."""
        if self._owns(failure):
            self.flows.undone(failure.correlation_id, self.reaction.name, "failed")
