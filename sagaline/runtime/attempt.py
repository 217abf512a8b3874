"""One delivery of a step message: claim an attempt, run it, record it, go on.

Steps 2 to 4 of the algorithm in :mod:`sagaline.runtime`. The transport hands each
delivery to :meth:`Runtime.deliver` and each final failure to :meth:`Runtime.step_failed`
or :meth:`Runtime.compensation_failed`; it turns the two signals, :class:`RetryIn` and
:class:`Skip`, into its own retry and drop (ended as the skip's
:class:`~sagaline.runtime.message.Ending` says). After each of the three, :meth:`Runtime.after`
does the chores of a delivery: it settles child sagas that ended and publishes events.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sagaline import codec
from sagaline.child import SubSaga, child_id_of
from sagaline.context import StepContext, WaitForSignal
from sagaline.dynamic import added_steps, extend
from sagaline.errors import (
    AttemptsLostError,
    InjectedFaultError,
    ResultError,
    describe_error,
)
from sagaline.events.outbox import Outbox
from sagaline.refs import resolve_all
from sagaline.runtime.driver import Driver, group_spec
from sagaline.runtime.heartbeat import Heartbeat
from sagaline.runtime.message import Ending, Envelope, RetryIn, Skip
from sagaline.runtime.nested import NestedSagas
from sagaline.runtime.operation import Plan, operation_span, plan_for
from sagaline.runtime.progress import ProgressSink, Report
from sagaline.runtime.signals import Signals
from sagaline.saga import Element, Saga
from sagaline.status import Role
from sagaline.step import Step
from sagaline.store.redis import RedisStore
from sagaline.store.replies import Claim

log = logging.getLogger("sagaline.runtime")

#: Longest wait before a message that found a live lease looks again.
BUSY_RECHECK_MAX_S = 2.0

#: Checks an event a step is about to emit: what is wrong with it (empty: nothing).
EventCheck = Callable[[str, dict[str, Any]], list[str]]


@dataclass
class Delivery:
    """What one delivery leaves for :meth:`Runtime.after` to do."""

    saga_id: str
    """The saga the message was for (its events are published after)."""
    children: bool = False
    """Whether a child saga may have ended (then the ended children are settled)."""
    report: Report | None = None
    """How the transport shows a progress report (``None``: it does not)."""


@dataclass(frozen=True)
class _Outcome:
    """What a completed attempt records, and the definition the saga goes on with."""

    result: Any
    saga: Saga
    last: bool
    added: list[Element]
    saga_result: Any


class Runtime:
    """Runs the deliveries of step messages.

    Args:
        store: Where runs are recorded.
        driver: Decides and sends what runs next.
        nested: Starts, undoes and settles child sagas.
        outbox: Publishes the events a delivery logged.
        lease_s: How long an attempt's claim lasts without a heartbeat.
        check_event: Checks each event a step emits.
        max_recoveries: How often an operation lost with its process (it died mid-step)
            is run again; past that, the claim answers ``lost`` and it fails for good.
        signals: Lets actions wait for signals (by default, on ``store`` and ``driver``).
    """

    def __init__(self, store: RedisStore, driver: Driver, nested: NestedSagas, outbox: Outbox,
                 *, lease_s: float, check_event: EventCheck, max_recoveries: int = 5,
                 signals: Signals | None = None) -> None:
        """Run deliveries against ``store``, going on with ``driver``."""
        self.store = store
        self.driver = driver
        self.nested = nested
        self.outbox = outbox
        self.lease_s = lease_s
        self.check_event = check_event
        self.max_recoveries = max_recoveries
        self.signals = signals or Signals(store, driver)

    # -- the transport's three entries ----------------------------------------------------

    def deliver(self, envelope: Envelope, call: Callable[..., Any],
                report: Report | None = None) -> Any:
        """Run one delivery of a step message, then its chores.

        Args:
            envelope: The message's ids.
            call: Calls the operation's function with ``(ctx, **arguments)``; a transport
                raises :class:`~sagaline.errors.StepTimeoutError` from it when the attempt
                ran out of time.
            report: Shows a ``ctx.progress`` report where the transport's tools look.

        Raises:
            RetryIn: The message must come back later.
            Skip: The message must be dropped; its ``ending`` says how its task ends.
        """
        delivery = Delivery(envelope.saga_id, report=report)
        try:
            return self.execute(envelope, call, delivery)
        finally:
            self.after(delivery)

    def step_failed(self, envelope: Envelope, exc: BaseException) -> None:
        """An action failed for good (the errback): fail the saga once, roll it back."""
        try:
            self.driver.step_failed(envelope, exc)
        finally:
            self.after(Delivery(envelope.saga_id, children=True))

    def compensation_failed(self, envelope: Envelope, exc: BaseException) -> None:
        """A compensation failed for good (its errback): record it, go on with the rest."""
        try:
            self.driver.compensation_failed(envelope, exc)
        finally:
            self.after(Delivery(envelope.saga_id, children=True))

    def after(self, delivery: Delivery) -> None:
        """The chores after a delivery: settle ended child sagas, publish the events."""
        try:
            if delivery.children:
                self.nested.drain()
        finally:
            self.outbox.flush_soon(delivery.saga_id)

    # -- one delivery ----------------------------------------------------------------------

    def execute(self, envelope: Envelope, call: Callable[..., Any], delivery: Delivery) -> Any:
        """Claim an attempt, run it and record it; see :mod:`sagaline.runtime`, step 2."""
        plan = plan_for(self.driver.definition_of(envelope.saga, envelope.saga_id), envelope)
        claim = self.store.begin(envelope.saga_id, envelope.role, plan.step.name,
                                 index=plan.index, lease_s=self.lease_s, needed=plan.needed,
                                 max_attempts=self.max_recoveries + 1)
        if claim.kind == "completed":
            group = plan.saga.group_of(plan.step.name)
            in_chain = envelope.role is Role.ACTION and group is None
            if (in_chain and claim.cursor > plan.index) or envelope.role is Role.FALLBACK \
                    or group:
                raise Skip(f"{plan.step.name} completed and the saga went on: a duplicate "
                           "message", ending=Ending.SUCCEEDED)
            return claim.result
        if claim.kind == "busy":
            raise RetryIn(min(claim.wait_s + 0.1, BUSY_RECHECK_MAX_S))
        if claim.kind == "lost":
            lost = AttemptsLostError(
                f"{plan.step.name} was lost with its process on each of its {claim.attempt} "
                f"attempts (the process died mid-step; {self.max_recoveries} re-runs allowed); "
                "it is not attempted again",
                saga_id=envelope.saga_id, step=plan.step.name)
            log.error("[saga %s] %s", envelope.saga_id, lost)
            self._failed(plan, envelope, claim.attempt, lost)
            raise lost
        if claim.kind != "run":
            raise Skip(f"{envelope.role.value} {plan.step.name} not run: {claim.kind} "
                       f"{claim.saga_status}", ending=Ending.DROPPED)
        delivery.children = bool(claim.parent_id) or isinstance(plan.step, SubSaga)
        ctx, value = self._run(envelope, plan, claim, call, delivery.report)
        try:
            done = self._outcome(envelope, plan, claim, value)
        except Exception as error:
            # The function ran to its end: whatever fails now must not run it again.
            return self._unusable(envelope, plan, claim, ctx, value, error)
        return self._record(envelope, plan, claim, ctx, done)

    def _run(self, envelope: Envelope, plan: Plan, claim: Claim, call: Callable[..., Any],
             report: Report | None = None) -> tuple[StepContext, Any]:
        """Run the claimed attempt under its lease; on failure, :meth:`_failed` decides.

        Returns the context and what the function returned, as it returned it.
        """
        assert claim.inputs is not None and claim.results is not None
        step, role = plan.step, envelope.role
        heartbeat = Heartbeat(self.store, envelope.saga_id, role, step.name, claim.attempt,
                              self.lease_s)
        ctx = StepContext(
            saga_id=envelope.saga_id, saga_name=plan.saga.name, step=step.name, role=role,
            attempt=claim.attempt, correlation_id=claim.correlation_id,
            cancel_check=heartbeat.should_stop, undoes_fallback=envelope.undoes_fallback,
            causation_id=claim.started_event or None, event_check=self.check_event,
            source=getattr(step.task_for(role, envelope.undoes_fallback), "name", step.name),
            progress_sink=ProgressSink(self.store, plan.saga.name, envelope.saga_id, role,
                                       step.name, claim.attempt, report),
            signal_reader=lambda name: self.store.signals(envelope.saga_id, name),
        )
        span = operation_span(envelope, plan.saga, plan.index, claim.attempt,
                               claim.correlation_id)
        try:
            arguments = resolve_all(plan.refs, claim.inputs, claim.results)
            if claim.fault:
                raise InjectedFaultError(claim.fault, saga_id=envelope.saga_id, step=step.name)
            if isinstance(step, SubSaga):
                self._run_child(envelope, step, claim, arguments)
            with heartbeat:
                value = call(ctx, **arguments)
        except Skip:
            raise
        except WaitForSignal as wait:
            span.stop()
            refused = self.signals.park(envelope, plan, claim, wait)
            self._failed(plan, envelope, claim.attempt, refused)
            raise refused from None
        except Exception as error:
            span.exception(error, retrying=plan.policy.should_retry(error, claim.attempt))
            self._failed(plan, envelope, claim.attempt, error)
            raise
        span.stop()
        return ctx, value

    def _run_child(self, envelope: Envelope, step: SubSaga, claim: Claim,
                   inputs: dict[str, Any]) -> None:
        """Start the step's child saga (or its rollback) and let the worker go."""
        child_id = child_id_of(envelope.saga_id, step.name)
        if envelope.role is Role.COMPENSATION:
            if not self.store.wait_for_child(envelope.saga_id, envelope.role, step.name,
                                             attempt=claim.attempt, child_id=child_id):
                raise Skip(f"compensation of {step.name} lost its claim", ending=Ending.DROPPED)
            self.nested.undo(step.child, child_id)
            raise Skip(f"{step.name}: the rollback of child saga {child_id} runs; its end "
                       "goes on with this one's", ending=Ending.SUCCEEDED)
        values = step.child.validate_inputs(inputs)
        if not self.store.wait_for_child(envelope.saga_id, envelope.role, step.name,
                                         attempt=claim.attempt, child_id=child_id):
            raise Skip(f"{step.name} lost its claim", ending=Ending.DROPPED)
        self.nested.start(step.child, values, child_id, parent=(envelope.saga_id, step.name),
                            correlation_id=claim.correlation_id,
                            causation_id=claim.started_event)
        raise Skip(f"{step.name} waits for child saga {child_id}; its end goes on with this one",
                   ending=Ending.SUCCEEDED)

    # -- recording it, and going on ---------------------------------------------------------

    def _outcome(self, envelope: Envelope, plan: Plan, claim: Claim, value: Any) -> _Outcome:
        """What a completed attempt records: its result and, for an action, what follows.

        Raises whatever makes the result unusable (see :meth:`_unusable`).
        """
        result = codec.jsonable(value)
        if envelope.role is Role.COMPENSATION:
            return _Outcome(result, plan.saga, False, [], None)
        step = plan.step
        added = (added_steps(step, result, self.driver.tasks)
                 if envelope.role is Role.ACTION else [])
        saga, last = plan.saga, plan.last
        if added:
            saga, last = extend(saga, step.name, added), False
        saga_result = None
        if last:
            assert claim.inputs is not None and claim.results is not None
            saga_result = saga.build_result(claim.inputs, {**claim.results, step.name: result})
        return _Outcome(result, saga, last, added, saga_result)

    def _unusable(self, envelope: Envelope, plan: Plan, claim: Claim, ctx: StepContext,
                  value: Any, error: Exception) -> Any:
        """The function returned, but its result cannot be used: never run it again.

        A compensation's result is recorded as ``null`` (nothing reads it). An action is
        recorded completed (its result too, if JSON can encode it) and the saga fails with a
        :class:`~sagaline.errors.ResultError`, so the rollback undoes this step with the
        others.
        """
        step, saga_id = plan.step, envelope.saga_id
        try:
            result = codec.jsonable(value)
        except (ValueError, TypeError, RecursionError):
            result = None
        if envelope.role is Role.COMPENSATION:
            log.warning("[saga %s] compensation of %s returned a value JSON cannot encode "
                        "(%s); recorded as null", saga_id, step.name, error)
            return self._record(envelope, plan, claim, ctx,
                                _Outcome(None, plan.saga, False, [], None))
        problem = ResultError(
            f"{step.name} ran to its end, but its result cannot be used "
            f"({type(error).__name__}: {error}); it is recorded completed and the saga is "
            "rolled back, this step included", saga_id=saga_id, step=step.name)
        outcome = self.store.complete(saga_id, envelope.role, step.name, attempt=claim.attempt,
                                      result=result, events=ctx.emitted)
        self._check_outcome(envelope, outcome, claim.attempt)
        log.error("[saga %s] %s", saga_id, problem)
        self.driver.fail(plan.saga, saga_id, step.name,
                         describe_error(problem, step=step.name, attempt=claim.attempt,
                                        retryable=False))
        raise problem from error

    def _record(self, envelope: Envelope, plan: Plan, claim: Claim, ctx: StepContext,
                done: _Outcome) -> Any:
        """Record a completed attempt and drive the saga on (step 2c-2f of the algorithm)."""
        saga_id, role, step = envelope.saga_id, envelope.role, plan.step
        saga, last, result, added = done.saga, done.last, done.result, done.added
        if role is Role.COMPENSATION:
            outcome = self.store.complete(saga_id, role, step.name, attempt=claim.attempt,
                                          result=result, events=ctx.emitted)
            self._check_outcome(envelope, outcome, claim.attempt)
            if outcome == "continue":
                self.driver.continue_rollback(saga_id)
            return result
        group = saga.group_of(step.name)
        if group is not None:
            outcome, start = self.store.complete_branch(
                saga_id, role, step.name, attempt=claim.attempt, result=result,
                group=group_spec(group), events=ctx.emitted)
            self._check_outcome(envelope, outcome, claim.attempt)
            self.driver.send(saga, saga_id, start, Role.ACTION)
            if outcome == "group_done":
                self.driver.forward(saga, saga_id, saga.element_index(step.name) + 1)
            return result
        position = saga.element_index(step.name)
        following = ""
        if not last and isinstance(saga.elements[position + 1], Step):
            following = saga.elements[position + 1].name
        outcome = self.store.complete(
            saga_id, role, step.name, attempt=claim.attempt, result=result,
            saga_result=done.saga_result, final=last, next_step=following,
            plan=[s.name for s in saga.steps] if added else None, events=ctx.emitted,
        )
        self._check_outcome(envelope, outcome, claim.attempt)
        if not last and (role is Role.FALLBACK or not following or added):
            # Outside the chain (a fallback), at its end (a group follows), or with steps
            # the chain does not know (just added): drive on, and stop the chain.
            self.driver.forward(saga, saga_id, position + 1)
            if added and role is Role.ACTION:
                raise Skip(f"{step.name} added {', '.join(s.name for s in added)}; they run next",
                           ending=Ending.SUCCEEDED)
        return result

    def _check_outcome(self, envelope: Envelope, outcome: str, attempt: int) -> None:
        if outcome == "stale":
            raise Skip(f"{envelope.role.value} {envelope.step} attempt {attempt} lost its lease",
                       ending=Ending.DROPPED)
        if outcome == "late":
            # The saga was stopped while this ran: undo it, and do not go on with the chain.
            self.driver.continue_rollback(envelope.saga_id)
            raise Skip(f"{envelope.step} completed after its saga was stopped; compensating it",
                       ending=Ending.SUCCEEDED)

    def _failed(self, plan: Plan, envelope: Envelope, attempt: int, error: Exception) -> None:
        """Record a failed attempt; raise :class:`RetryIn` or :class:`Skip` to go on.

        :class:`RetryIn` when the policy retries it, :class:`Skip` when the step's fallback
        takes over; returns when the failure is final (the caller re-raises it).
        """
        role, step, policy = envelope.role, plan.step, plan.policy
        retry = policy.should_retry(error, attempt)
        delay = policy.delay(attempt) if retry else None
        record = describe_error(error, step=step.name, attempt=attempt,
                                retryable=policy.is_retryable(error))
        outcome = self.store.fail(
            envelope.saga_id, role, step.name, attempt=attempt, error=record, retry_in_s=delay,
            fallback=role is Role.ACTION and step.fallback is not None,
        )
        if outcome == "fallback":
            log.warning("[saga %s] %s gave up (%s); trying its fallback", envelope.saga_id,
                        step.name, record["message"])
            self.driver.send(plan.saga, envelope.saga_id, [step.name], Role.FALLBACK)
            raise Skip(f"{step.name} gave up; its fallback runs next", ending=Ending.FAILED,
                       error=error) from error
        if outcome == "stale":
            raise Skip(f"{role.value} {step.name} attempt {attempt} lost its lease",
                       ending=Ending.DROPPED) from error
        if outcome == "late":
            self.driver.continue_rollback(envelope.saga_id)
            raise Skip(f"{step.name} failed after its saga was stopped: not retried",
                       ending=Ending.FAILED, error=error) from error
        if delay is not None:
            log.warning("[saga %s] %s %s attempt %d failed (%s); retrying in %.2f s",
                        envelope.saga_id, role.value, step.name, attempt, record["message"],
                        delay)
            raise RetryIn(delay, error) from error
