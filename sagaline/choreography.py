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
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from pydantic import BaseModel, ConfigDict, validate_call

from . import _json, ids
from .bus import Subscription
from .context import StepContext
from .errors import DefinitionError, SagaNotFoundError, StateError, WaitTimeoutError
from .events import Event, derived_id, name_problems
from .saga import SAGA_NAME, validate_inputs
from .status import Role
from .task import SagaTask

if TYPE_CHECKING:
    from .engine import Sagaline

FLOW_STATUSES = ("running", "completed", "compensating", "compensated",
                 "compensation_failed", "failed")
FINAL_FLOW_STATUSES = frozenset({"completed", "compensated", "compensation_failed", "failed"})

_CONCLUDE = """
local function conclude_if_undone(now)
  if redis.call('HGET', KEYS[1], 'status') ~= 'compensating' then return end
  local done = redis.call('HKEYS', KEYS[2])
  local failed = false
  for _, name in ipairs(done) do
    local undo = redis.call('HGET', KEYS[3], name)
    if not undo then return end
    if undo == 'failed' then failed = true end
  end
  local final = 'compensated'
  if failed then final = 'compensation_failed' end
  redis.call('HSET', KEYS[1], 'status', final, 'ended_at', now)
end
local t = redis.call('TIME')
local now = string.format('%.6f', tonumber(t[1]) + tonumber(t[2]) / 1000000)
"""
_CREATE = _CONCLUDE + """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'saga', ARGV[1], 'status', 'running', 'inputs', ARGV[2],
           'started_at', now)
redis.call('ZADD', KEYS[4], now, ARGV[3])
return 1
"""
_DONE = _CONCLUDE + """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 'missing' end
redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2])
return status
"""
_FAIL = _CONCLUDE + """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 'missing' end
if status == 'running' then
  redis.call('HSET', KEYS[1], 'status', 'compensating', 'failure', ARGV[1], 'failed_by', ARGV[2])
end
conclude_if_undone(now)
return redis.call('HGET', KEYS[1], 'status')
"""
_UNDONE = _CONCLUDE + """
if not redis.call('HGET', KEYS[1], 'status') then return 'missing' end
redis.call('HSETNX', KEYS[3], ARGV[1], ARGV[2])
conclude_if_undone(now)
return redis.call('HGET', KEYS[1], 'status')
"""
_COMPLETE = _CONCLUDE + """
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then
  return redis.call('HGET', KEYS[1], 'status') or 'missing'
end
redis.call('HSET', KEYS[1], 'status', 'completed', 'ended_at', now)
return 'completed'
"""
_ABANDON = _CONCLUDE + """
redis.call('HSET', KEYS[1], 'status', 'failed', 'ended_at', now, 'error', ARGV[1])
return 1
"""


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


@dataclass(frozen=True)
class FlowRun:
    """A choreographed flow as recorded."""

    correlation_id: str
    """The flow's id (its correlation id)."""
    saga: str
    """The choreography's name."""
    status: str
    """``running``, ``completed``, ``compensating``, ``compensated``,
    ``compensation_failed`` or ``failed``."""
    completed: dict[str, Any]
    """Reactions that completed, with the payload they emitted."""
    undone: dict[str, str]
    """Reactions whose compensation ended: ``completed`` or ``failed``."""
    failure: str | None
    """The failure event that started the compensations, if any."""

    @property
    def is_final(self) -> bool:
        """Whether the flow will not change any more."""
        return self.status in FINAL_FLOW_STATUSES


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
        self._scripts: dict[str, Any] = {}
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

    def _keys(self, cid: str) -> list[str]:
        base = f"{self.engine.store.prefix}flow:{cid}"
        return [base, f"{base}:done", f"{base}:undo", f"{self.engine.store.prefix}index:flows"]

    def _script(self, source: str, cid: str, *args: Any) -> Any:
        script = self._scripts.get(source)
        if script is None:
            script = self._scripts[source] = self.engine.store.client.register_script(source)
        return script(keys=self._keys(cid), args=list(args))

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
            subscriptions.append(Subscription(
                f"{self.name}.{reaction.name}", (reaction.on,), _Runner(self, reaction).react,
                max_retries=reaction.max_retries, on_give_up=_Runner(self, reaction).give_up))
            if reaction.undo is not None:
                subscriptions.append(Subscription(
                    f"{self.name}.{reaction.name}.undo", failures,
                    _Runner(self, reaction).compensate, max_retries=reaction.max_retries,
                    on_give_up=_Runner(self, reaction).compensation_gave_up))
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
        if not self._script(_CREATE, cid, self.name, _json.dumps(values), cid):
            raise StateError(f"a flow with correlation id {cid} exists already")
        event = Event.new(self.starts_with, values, correlation_id=cid, causation_id=cause,
                          source=self.name, meta={"saga": self.name})
        try:
            assert self.engine.bus is not None
            self.engine.bus.publish(event)
        except Exception as error:
            self._script(_ABANDON, cid, f"{type(error).__name__}: {error}")
            raise
        return cid

    def get(self, correlation_id: str) -> FlowRun:
        """The flow as recorded.

        Raises:
            SagaNotFoundError: No such flow is recorded.
        """
        flow, done, undo = self._keys(correlation_id)[:3]
        client = self.engine.store.client
        record = cast(dict[str, str], client.hgetall(flow))
        if not record:
            raise SagaNotFoundError(f"no choreographed flow {correlation_id!r} is recorded")
        completed = {k: _json.loads(v) for k, v in
                     cast(dict[str, str], client.hgetall(done)).items()}
        return FlowRun(correlation_id, record["saga"], record["status"], completed,
                       cast(dict[str, str], client.hgetall(undo)), record.get("failure"))

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

    def _ours(self, event: Event) -> bool:
        saga = self.engine.store.client.hget(self._keys(event.correlation_id)[0], "saga")
        return saga == self.name

    def _on_completed(self, event: Event) -> None:
        if self._ours(event):
            self._script(_COMPLETE, event.correlation_id)


class _Runner:
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
        if not self.saga._ours(event):
            return
        cid = event.correlation_id
        if self.saga.get(cid).status != "running":
            return  # the flow failed or ended meanwhile: nothing new starts
        ctx = self._context(event, Role.ACTION, self.reaction.run)
        result = self._call(self.reaction.run, ctx, event.payload)
        payload = {**event.payload, **(result if isinstance(result, dict) else {
            self.reaction.name: result})}
        status = self.saga._script(_DONE, cid, self.reaction.name, _json.dumps(payload))
        if status != "running" and self.reaction.undo is not None:
            # The flow failed while this ran: undo it now, and emit nothing that goes on.
            self._publish(event, ctx, None)
            self.compensate_completed(event, payload)
            return
        follow = self._follow_up(event, self.reaction.emits, payload, "emits")
        self._publish(event, ctx, follow)

    def give_up(self, event: Event, error: Exception) -> None:
        """The reaction failed for good: turn the flow to compensating, emit the failure."""
        if not self.saga._ours(event):
            return
        payload = {**event.payload, "failed": self.reaction.name,
                   "error": {"type": type(error).__name__, "message": str(error)}}
        failure = self._follow_up(event, self.reaction.fails_with, payload, "fails_with")
        self.saga._script(_FAIL, event.correlation_id, failure.name, self.reaction.name)
        bus = self.saga.engine.bus
        assert bus is not None
        bus.publish(failure)

    def compensate(self, failure: Event) -> None:
        """On a failure event of the flow: undo this reaction if it completed, once."""
        if not self.saga._ours(failure):
            return
        client = self.saga.engine.store.client
        _, done, undo, _ = self.saga._keys(failure.correlation_id)
        if client.hexists(undo, self.reaction.name):
            return
        raw = cast(str | None, client.hget(done, self.reaction.name))
        if raw is None:
            return
        self.compensate_completed(failure, _json.loads(raw))

    def compensate_completed(self, cause: Event, payload: Mapping[str, Any]) -> None:
        """Run the compensation with arguments from the reaction's own emitted payload."""
        undo = self.reaction.undo
        assert undo is not None
        ctx = self._context(cause, Role.COMPENSATION, undo)
        self._call(undo, ctx, payload)
        self._publish(cause, ctx, None)
        self.saga._script(_UNDONE, cause.correlation_id, self.reaction.name, "completed")

    def compensation_gave_up(self, failure: Event, error: Exception) -> None:
        """The compensation failed for good: record it, so the flow can end."""
        if self.saga._ours(failure):
            self.saga._script(_UNDONE, failure.correlation_id, self.reaction.name, "failed")
