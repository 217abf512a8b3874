"""Choreographed sagas: participants react to events and emit events; nobody coordinates.

A :class:`ChoreographySaga` declares, for each participant, the event it reacts to, the
saga task it runs, the event it emits when that succeeds and the one it emits when it
gives up, and the compensation that undoes it (as Cliffracer's ``on_event`` / ``emits``).
Each reaction and each compensation is its own subscriber on the bus, a Celery task;
no process drives the flow, which emerges from the events:

1. ``start`` validates the inputs, records the flow (its correlation id is its id) and
   publishes the starting event with the inputs as its payload.
2. A reaction runs its task with the arguments it takes from the event's payload, records
   that it completed (with what it returned), then emits its success event, whose payload
   is the trigger's payload plus the result, so later reactions see every earlier result.
3. A reaction that gives up (an error marked ``non_retryable``, or its retries spent)
   turns the flow to compensating and emits its failure event. Every participant that
   completed for this flow reacts to any failure event by running its compensation, once,
   in parallel with the others; a participant that completes after the failure undoes
   itself at once.
4. The completing event (``completes_on``) ends the flow ``completed``; the last
   compensation ends it ``compensated`` (or ``compensation_failed``). Every event names its
   trigger as its cause and carries the flow's correlation id, so ``sagaline trace`` shows
   the whole flow.

Events derived from a reaction have ids fixed by their trigger, so a redelivered trigger
re-publishes the same ids and subscribers drop the duplicate.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel

from sagaline import ids
from sagaline.choreography.flows import FlowRun, FlowStore
from sagaline.choreography.reaction import Reaction
from sagaline.choreography.runner import ReactionRunner
from sagaline.engine import Sagaline
from sagaline.errors import DefinitionError, SagaNotFoundError, StateError, WaitTimeoutError
from sagaline.events.bus import Subscription
from sagaline.events.canonical import Event
from sagaline.naming import name_problems
from sagaline.saga import SAGA_NAME, validate_inputs


class ChoreographySaga:
    """A saga whose participants coordinate through events (see the module docstring).

    Declaring checks it: names follow the event convention, every reaction's trigger is
    emitted by the start or by another reaction, the completing event is emitted by some
    reaction, and reaction names are unique.
    """

    def __init__(self, name: str, *, inputs: type[BaseModel], starts_with: str,
                 completes_on: str, reactions: Sequence[Reaction], description: str = ""
                 ) -> None:
        """Declare the choreography; raises :class:`DefinitionError` with what to fix."""
        self.name = name
        self.inputs = inputs
        self.starts_with = starts_with
        self.completes_on = completes_on
        self.reactions = tuple(reactions)
        self.description = description
        self._engine: Sagaline | None = None
        self._flows: FlowStore | None = None
        self._check()

    def _check(self) -> None:
        where = f"choreography {self.name!r}"
        if not SAGA_NAME.match(self.name):
            raise DefinitionError(f"{where}: the name must be lowercase letters, digits and _")
        names = [self.starts_with, self.completes_on]
        for reaction in self.reactions:
            names += [reaction.on, reaction.emits, reaction.fails_with]
        for name in names:
            problems = name_problems(name)
            if problems:
                raise DefinitionError(f"{where}: {problems[0]}")
        emitted = {self.starts_with} | {r.emits for r in self.reactions}
        for reaction in self.reactions:
            if reaction.on not in emitted:
                raise DefinitionError(
                    f"{where}: reaction {reaction.name!r} waits for {reaction.on!r}, which "
                    f"nothing emits (emitted: {', '.join(sorted(emitted))})")
        if self.completes_on not in emitted:
            raise DefinitionError(f"{where}: completes_on {self.completes_on!r} is never emitted")
        seen = [r.name for r in self.reactions]
        if len(set(seen)) != len(seen):
            raise DefinitionError(f"{where}: two reactions run the same task; names: {seen}")

    # -- keys and scripts ---------------------------------------------------------------------

    @property
    def engine(self) -> Sagaline:
        """The engine it is bound to.

        Raises:
            StateError: It was not bound (``bind``).
        """
        if self._engine is None:
            raise StateError(f"choreography {self.name!r} is not bound; call bind(engine)")
        return self._engine

    @property
    def flows(self) -> FlowStore:
        """The flows' records (once bound)."""
        if self._flows is None:
            self._flows = FlowStore(self.engine.store.client, self.engine.store.prefix)
        return self._flows

    # -- binding --------------------------------------------------------------------------

    def bind(self, engine: Sagaline) -> None:
        """Subscribe every reaction and compensation on the engine's bus (and its app).

        Raises:
            StateError: The engine has no bus.
        """
        if engine.bus is None:
            raise StateError(f"choreography {self.name!r} needs an engine with an event bus")
        self._engine = engine
        engine.choreographies[self.name] = self
        failures = tuple(sorted({r.fails_with for r in self.reactions}))
        subscriptions = [Subscription(f"{self.name}.completed", (self.completes_on,),
                                      self._on_completed)]
        for reaction in self.reactions:
            runner = ReactionRunner(self.name, reaction, self.flows, engine.bus,
                                    engine.runtime.check_event)
            subscriptions.append(Subscription(
                f"{self.name}.{reaction.name}", (reaction.on,), runner.react,
                max_retries=reaction.max_retries, on_give_up=runner.give_up))
            if reaction.undo is not None:
                subscriptions.append(Subscription(
                    f"{self.name}.{reaction.name}.undo", failures, runner.compensate,
                    max_retries=reaction.max_retries, on_give_up=runner.compensation_gave_up))
        engine.bus.subscribe(*subscriptions)

    def describe(self) -> dict[str, Any]:
        """The choreography as data: what ``sagaline sagas NAME`` shows."""
        return {
            "name": self.name, "kind": "choreography", "description": self.description,
            "inputs": self.inputs.__name__, "input_fields": list(self.inputs.model_fields),
            "starts_with": self.starts_with, "completes_on": self.completes_on,
            "reactions": [
                {"name": r.name, "on": r.on, "run": r.run.name, "emits": r.emits,
                 "fails_with": r.fails_with, "undo": r.undo.name if r.undo else None,
                 "args": dict(r.args), "max_retries": r.max_retries}
                for r in self.reactions
            ],
        }

    # -- running ------------------------------------------------------------------------

    def start(self, inputs: BaseModel | Mapping[str, Any], *, correlation_id: str | None = None,
              causation_id: str | None = None) -> str:
        """Validate the inputs, record the flow and publish its starting event.

        Returns the flow's correlation id.

        Raises:
            InvalidInputError: The inputs are invalid (naming each field); nothing recorded.
            InvalidCorrelationIdError: An id given is not a UUID; nothing recorded.
            PublishError: The bus refused the starting event; the flow is recorded failed.
        """
        values = validate_inputs(self.name, self.inputs, inputs)
        cid = ids.correlation_id(correlation_id)
        cause = ids.causation_id(causation_id)
        if not self.flows.create(cid, self.name, values):
            raise StateError(f"a flow with correlation id {cid} exists already")
        event = Event.new(self.starts_with, values, correlation_id=cid, causation_id=cause,
                          source=self.name, meta={"saga": self.name})
        try:
            assert self.engine.bus is not None
            self.engine.bus.publish(event)
        except Exception as error:
            self.flows.abandon(cid, f"{type(error).__name__}: {error}")
            raise
        return cid

    def get(self, correlation_id: str) -> FlowRun:
        """The flow as recorded.

        Raises:
            SagaNotFoundError: No such flow is recorded.
        """
        run = self.flows.get(correlation_id)
        if run is None:
            raise SagaNotFoundError(f"no choreographed flow {correlation_id!r} is recorded")
        return run

    def wait(self, correlation_id: str, timeout: float = 60.0) -> FlowRun:
        """Block until the flow is final and return it.

        Raises:
            WaitTimeoutError: It was not final within ``timeout`` seconds.
        """
        end = time.monotonic() + timeout
        while True:
            run = self.get(correlation_id)
            if run.is_final:
                return run
            if time.monotonic() > end:
                raise WaitTimeoutError(
                    f"flow {correlation_id} is still {run.status} after {timeout:g} s")
            time.sleep(0.05)

    def owns(self, event: Event) -> bool:
        """Whether the event belongs to a flow of this choreography."""
        return bool(self.flows.saga_of(event.correlation_id) == self.name)

    def _on_completed(self, event: Event) -> None:
        if self.owns(event):
            self.flows.finish(event.correlation_id)
