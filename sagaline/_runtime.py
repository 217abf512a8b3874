"""Running one attempt of a step's action or compensation, transport aside.

This is the engine's algorithm for a single message, in plain Python: the Celery wiring in
``_celery.py`` calls :meth:`Runtime.execute` and turns its two signals, :class:`RetryIn` and
:class:`Skip`, into Celery's retry and ignore.

A message runs one operation of one step: its action, its fallback, or its compensation
(which undoes the action, or the fallback when that is what completed).

1. Claim an attempt in Redis (``begin.lua``). The claim refuses when the saga is not in a
   state where this may run (ended, or compensating while this is a forward step), when the
   operation already failed for good, or when another attempt holds a live lease (then the
   message comes back later). If the operation completed before (the message was delivered
   again), its recorded result is returned and the action does not run again; a message
   outside the forward chain (a branch, a fallback) is dropped instead.
2. Resolve the arguments from the recorded inputs and earlier results (a step's result is
   its fallback's when the fallback ran), and build the :class:`StepContext` (saga id,
   step, attempt, correlation id, idempotency key).
   Telemetry hears of the attempt's start, and of its stop or exception.
3. Run the function while a heartbeat renews the attempt's lease. On success record the
   result; the last forward step also records the saga's result and completes it. Then
   drive the saga on:
   a. a step in the chain: the chain sends the next step; the last step before a group
      opens the group (sends its first branches, as many as its bound allows);
   b. a branch of a group: the same script that records it counts the group's branches,
      and returns the next branch to start (the bound holds) or, to the last branch to
      complete only, ``group_done``: then send the steps after the group (or complete the
      saga when the group was its last element);
   c. a fallback (outside the chain): send the steps after its step;
   d. a step that runs a child saga does not call a function: it records that it waits
      for the child (no lease, no worker held), starts the child and drops the message;
      the child's end (``conclude`` in Lua lists it in ``children_done``; whoever runs a
      child's message, an errback or the sweep drains the list) completes or fails the
      parent's step and drives the parent on. Its compensation rolls the child back the
      same way, and the parent's rollback goes on when the child's ended.
   e. a step whose result adds steps (``Step(..., adds=[...])``, :func:`add_steps`):
      the result, recorded, is where the added steps live, so every worker and the sweep
      rebuild the run's definition from it (``engine.definition_of``); the chain stops and
      the added steps are sent next.
   f. a compensation: enqueue what the rollback has next (``next_undo.lua``: the next
      stage, once every compensation of this one ended; a group's run in parallel). The
      last compensation concludes the rollback.
   An action that completes after its saga was stopped (cancelled, past its deadline, or a
   sibling branch failed) makes its compensation due: enqueue the rollback.
4. On failure ask the retry policy: record the failed attempt and retry after the policy's
   delay. When it gives up and the step has a fallback, record that and send the fallback
   (the chain stops here; the fallback drives the saga on). Otherwise record the final
   failure and raise, which reaches the errback (the chain's, or the branch's own): the
   saga turns compensating once (``fail_saga.lua``), or ``needs_attention`` when a pivot
   completed before. An action of a stopped saga is not retried; its rollback is enqueued
   instead.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from celery.exceptions import SoftTimeLimitExceeded

from . import _json, telemetry
from ._heartbeat import Heartbeat
from .child import SubSaga, child_id_of
from .context import StepContext
from .dynamic import added_steps, extend
from .errors import InjectedFaultError, StepTimeoutError
from .policy import RetryPolicy
from .refs import Ref, resolve_all, steps_referenced
from .saga import Saga
from .status import Role
from .step import Step

if TYPE_CHECKING:
    from .engine import Sagaline

log = logging.getLogger("sagaline.runtime")

#: Longest wait before a message that found a live lease looks again.
BUSY_RECHECK_MAX_S = 2.0


class RetryIn(Exception):  # noqa: N818 - a control signal, not an error
    """Signal: send this message again after ``delay_s`` seconds."""

    def __init__(self, delay_s: float, cause: BaseException | None = None) -> None:
        self.delay_s = delay_s
        self.cause = cause
        super().__init__(f"retry in {delay_s:.3f} s")


class Skip(Exception):  # noqa: N818 - a control signal, not an error
    """Signal: drop this message without running anything or continuing the chain."""


@dataclass(frozen=True)
class Envelope:
    """What a step message carries: ids only; arguments are read from Redis."""

    saga_id: str
    saga: str
    step: str
    role: Role
    undoes_fallback: bool = False
    """A compensation that undoes the step's fallback rather than its action."""

    def to_message(self) -> dict[str, str]:
        """The envelope as the message's keyword argument."""
        message = {"id": self.saga_id, "saga": self.saga, "step": self.step,
                   "role": self.role.value}
        if self.undoes_fallback:
            message["via"] = "fallback"
        return message

    @classmethod
    def from_message(cls, raw: Mapping[str, str]) -> Envelope:
        """Read an envelope back from a message."""
        return cls(raw["id"], raw["saga"], raw["step"], Role(raw["role"]),
                   raw.get("via") == "fallback")


def describe_error(error: BaseException, *, step: str, attempt: int | None = None,
                   retryable: bool | None = None) -> dict[str, Any]:
    """An error in the form the store records: type, message, step, attempt, details."""
    details = getattr(error, "details", None)
    return {
        "type": f"{type(error).__module__}.{type(error).__qualname__}",
        "message": str(error) or type(error).__name__,
        "step": step,
        "attempt": attempt,
        "retryable": retryable,
        "details": _json.jsonable(details) if isinstance(details, dict) else {},
    }


def time_limit_s(saga: Saga, step: Step) -> float:
    """Seconds one attempt of the step's action or compensation may run."""
    limit: timedelta = saga.time_limit_for(step)
    return limit.total_seconds()


def _operation_span(envelope: Envelope, saga: Saga, index: int, attempt: int,
                    correlation_id: str) -> telemetry.OperationSpan:
    """Tell telemetry an attempt starts; the span then reports its stop or exception."""
    scope = telemetry.current_scope()
    return telemetry.OperationSpan(("sagaline", "compensation" if envelope.role is
                                    Role.COMPENSATION else "step"), {
        "saga": saga.name, "saga_id": envelope.saga_id, "correlation_id": correlation_id,
        "step": envelope.step, "role": envelope.role.value, "position": index + 1,
        "total": len(saga.steps), "attempt": attempt,
        "traceparent": scope.traceparent if scope else "",
    })


class Runtime:
    """Executes step messages for one engine."""

    def __init__(self, engine: Sagaline) -> None:
        """Bind to the engine whose registry and store it uses."""
        self.engine = engine

    def execute(self, envelope: Envelope, call: Callable[..., Any]) -> Any:
        """Run one delivery of a step message; see the module docstring.

        Args:
            envelope: The message's ids.
            call: Calls the operation's function with ``(ctx, **arguments)``.

        Raises:
            RetryIn: The message must come back later.
            Skip: The message must be dropped.
        """
        parent: list[str] = []
        try:
            return self._execute(envelope, call, parent)
        finally:
            if parent and parent[0]:
                # A child saga may have ended just now: its parent goes on.
                self.engine.wake_parents()

    def _run_child(self, envelope: Envelope, step: SubSaga, attempt: int,
                   correlation_id: str, inputs: dict[str, Any], causation_id: str) -> None:
        """Start the step's child saga (or its rollback) and let the worker go."""
        child_id = child_id_of(envelope.saga_id, step.name)
        engine = self.engine
        if envelope.role is Role.COMPENSATION:
            if not engine.store.wait_for_child(envelope.saga_id, envelope.role, step.name,
                                               attempt=attempt, child_id=child_id):
                raise Skip(f"compensation of {step.name} lost its claim")
            engine.undo_child(step.child, child_id)
            raise Skip(f"{step.name}: the rollback of child saga {child_id} runs; its end "
                       "goes on with this one's")
        values = step.child.validate_inputs(inputs)
        if not engine.store.wait_for_child(envelope.saga_id, envelope.role, step.name,
                                           attempt=attempt, child_id=child_id):
            raise Skip(f"{step.name} lost its claim")
        engine.start_child(step.child, values, child_id, parent=(envelope.saga_id, step.name),
                           correlation_id=correlation_id, causation_id=causation_id)
        raise Skip(f"{step.name} waits for child saga {child_id}; its end goes on with this one")

    def _execute(self, envelope: Envelope, call: Callable[..., Any], parent: list[str]) -> Any:
        """:meth:`execute`; ``parent`` receives the parent saga's id once claimed."""
        store = self.engine.store
        saga = self.engine.definition_of(envelope.saga, envelope.saga_id)
        step = saga.step(envelope.step)
        index = saga.index_of(step.name)
        role = envelope.role
        group = saga.group_of(step.name)
        last = role is not Role.COMPENSATION and saga.is_last(step.name)
        refs, needed, policy = self._plan(saga, step, envelope, last)
        lease_s = self.engine.lease_s
        claim = store.begin(
            envelope.saga_id, role, step.name, index=index, lease_s=lease_s, needed=needed,
        )
        if claim.kind == "completed":
            in_chain = role is Role.ACTION and group is None
            if (in_chain and claim.cursor > index) or role is Role.FALLBACK or group:
                raise Skip(f"{step.name} completed and the saga went on: a duplicate message")
            return claim.result
        if claim.kind == "busy":
            raise RetryIn(min(claim.wait_s + 0.1, BUSY_RECHECK_MAX_S))
        if claim.kind != "run":
            raise Skip(f"{role.value} {step.name} not run: {claim.kind} {claim.saga_status}")
        parent.append(claim.parent_id)

        assert claim.inputs is not None and claim.results is not None
        heartbeat = Heartbeat(store, envelope.saga_id, role, step.name, claim.attempt, lease_s)
        ctx = StepContext(
            saga_id=envelope.saga_id, saga_name=saga.name, step=step.name, role=role,
            attempt=claim.attempt, correlation_id=claim.correlation_id,
            cancel_check=heartbeat.should_stop, undoes_fallback=envelope.undoes_fallback,
            causation_id=claim.started_event or None, event_check=self.engine.check_event,
            source=getattr(step.task_for(role, envelope.undoes_fallback), "name", step.name),
        )
        span = _operation_span(envelope, saga, index, claim.attempt, claim.correlation_id)
        try:
            arguments = resolve_all(refs, claim.inputs, claim.results)
            if claim.fault:
                raise InjectedFaultError(claim.fault, saga_id=envelope.saga_id, step=step.name)
            if isinstance(step, SubSaga):
                self._run_child(envelope, step, claim.attempt, claim.correlation_id, arguments,
                                claim.started_event)
            with heartbeat:
                result = _json.jsonable(call(ctx, **arguments))
            added = added_steps(step, result, self.engine.tasks) if role is Role.ACTION else []
            if added:
                saga, last = extend(saga, step.name, added), False
        except Skip:
            raise
        except SoftTimeLimitExceeded as exceeded:
            timeout = StepTimeoutError(
                f"{step.name} ran past its time limit of {time_limit_s(saga, step):g} s",
                saga_id=envelope.saga_id, step=step.name,
            )
            timeout.__cause__ = exceeded
            span.exception(timeout, retrying=policy.should_retry(timeout, claim.attempt))
            self._failed(saga, envelope, step, claim.attempt, timeout, policy)
            raise timeout from exceeded
        except Exception as error:
            span.exception(error, retrying=policy.should_retry(error, claim.attempt))
            self._failed(saga, envelope, step, claim.attempt, error, policy)
            raise
        span.stop()

        if role is Role.COMPENSATION:
            outcome = store.complete(envelope.saga_id, role, step.name, attempt=claim.attempt,
                                     result=result, events=ctx.emitted)
            self._check_outcome(envelope, outcome, claim.attempt)
            if outcome == "continue":
                self.engine.continue_rollback(envelope.saga_id)
            return result
        if group is not None:
            outcome, start = store.complete_branch(
                envelope.saga_id, role, step.name, attempt=claim.attempt, result=result,
                group=group, events=ctx.emitted)
            self._check_outcome(envelope, outcome, claim.attempt)
            self.engine.send(saga, envelope.saga_id, start, Role.ACTION)
            if outcome == "group_done":
                self.engine.drive_forward(saga, envelope.saga_id,
                                          saga.element_index(step.name) + 1)
            return result
        saga_result = None
        if last:
            saga_result = saga.build_result(claim.inputs, {**claim.results, step.name: result})
        following = ""
        position = saga.element_index(step.name)
        if not last and isinstance(saga.elements[position + 1], Step):
            following = saga.elements[position + 1].name
        outcome = store.complete(
            envelope.saga_id, role, step.name, attempt=claim.attempt, result=result,
            saga_result=saga_result, final=last, next_step=following,
            plan=[s.name for s in saga.steps] if added else None, events=ctx.emitted,
        )
        self._check_outcome(envelope, outcome, claim.attempt)
        if not last and (role is Role.FALLBACK or not following or added):
            # Outside the chain (a fallback), at its end (a group follows), or with steps
            # the chain does not know (just added): drive on, and stop the chain.
            self.engine.drive_forward(saga, envelope.saga_id, position + 1)
            if added and role is Role.ACTION:
                raise Skip(f"{step.name} added {', '.join(s.name for s in added)}; they run next")
        return result

    def _check_outcome(self, envelope: Envelope, outcome: str, attempt: int) -> None:
        if outcome == "stale":
            raise Skip(f"{envelope.role.value} {envelope.step} attempt {attempt} lost its lease")
        if outcome == "late":
            # The saga was stopped while this ran: undo it, and do not go on with the chain.
            self.engine.continue_rollback(envelope.saga_id)
            raise Skip(f"{envelope.step} completed after its saga was stopped; compensating it")

    def _plan(self, saga: Saga, step: Step, envelope: Envelope, last: bool
              ) -> tuple[Mapping[str, Ref], list[str], RetryPolicy]:
        role = envelope.role
        if role is not Role.COMPENSATION:
            refs = step.args
            policy = saga.retry_for(step)
            if role is Role.FALLBACK and step.fallback is not None:
                refs = step.fallback.args
                policy = step.fallback.retry or saga.retry
            needed = steps_referenced(refs)
            if last:
                needed += [s for s in saga.results_for_return() if s not in needed]
            return refs, [s for s in needed if s != step.name], policy
        undo = step.undo_args
        if envelope.undoes_fallback and step.fallback is not None:
            undo = step.fallback.undo_args(step.name)
        return undo, steps_referenced(undo), saga.compensation_retry_for(step)

    def _failed(self, saga: Saga, envelope: Envelope, step: Step, attempt: int,
                error: Exception, policy: RetryPolicy) -> None:
        """Record a failed attempt; raise :class:`RetryIn` or :class:`Skip` to go on.

        :class:`RetryIn` when the policy retries it, :class:`Skip` when the step's fallback
        takes over.
        """
        role = envelope.role
        retry = policy.should_retry(error, attempt)
        delay = policy.delay(attempt) if retry else None
        record = describe_error(
            error, step=step.name, attempt=attempt, retryable=policy.is_retryable(error)
        )
        fallback = role is Role.ACTION and step.fallback is not None
        outcome = self.engine.store.fail(
            envelope.saga_id, role, step.name, attempt=attempt, error=record, retry_in_s=delay,
            fallback=fallback,
        )
        if outcome == "fallback":
            log.warning("[saga %s] %s gave up (%s); trying its fallback", envelope.saga_id,
                        step.name, record["message"])
            self.engine.send(saga, envelope.saga_id, [step.name], Role.FALLBACK)
            raise Skip(f"{step.name} gave up; its fallback runs next") from error
        if outcome == "stale":
            raise Skip(f"{role.value} {step.name} attempt {attempt} lost its lease") from error
        if outcome == "late":
            self.engine.continue_rollback(envelope.saga_id)
            raise Skip(f"{step.name} failed after its saga was stopped: not retried") from error
        if delay is not None:
            log.warning("[saga %s] %s %s attempt %d failed (%s); retrying in %.2f s",
                        envelope.saga_id, role.value, step.name, attempt, record["message"], delay)
            raise RetryIn(delay, error) from error
