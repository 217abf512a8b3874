"""Running one attempt of a step's action or compensation, transport aside.

This is the engine's algorithm for a single message, in plain Python: the Celery wiring in
``_celery.py`` calls :meth:`Runtime.execute` and turns its two signals, :class:`RetryIn` and
:class:`Skip`, into Celery's retry and ignore.

1. Claim an attempt in Redis (``begin.lua``). The claim refuses when the saga is not in a
   state where this may run (ended, or compensating while this is a forward step), when the
   operation already failed for good, or when another attempt holds a live lease (then the
   message comes back later). If the operation completed before (the message was delivered
   again), its recorded result is returned and the action does not run again.
2. Resolve the arguments from the recorded inputs and earlier results, and build the
   :class:`StepContext` (saga id, step, attempt, correlation id, idempotency key).
   Telemetry hears of the attempt's start, and of its stop or exception.
3. Run the function while a heartbeat renews the attempt's lease. On success record the
   result; the last forward step also records the saga's result and completes it, and the
   last compensation concludes the rollback. An action that completes after its saga was
   stopped (cancelled, past its deadline) makes its compensation due: enqueue the rollback.
4. On failure ask the retry policy: record the failed attempt and retry after the policy's
   delay, or record the final failure and raise, which reaches the chain's errback. An
   action of a stopped saga is not retried; its rollback is enqueued instead.
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
from .context import StepContext
from .errors import InjectedFaultError, StepTimeoutError
from .policy import RetryPolicy
from .refs import Ref, resolve_all
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

    def to_message(self) -> dict[str, str]:
        """The envelope as the message's keyword argument."""
        return {"id": self.saga_id, "saga": self.saga, "step": self.step, "role": self.role.value}

    @classmethod
    def from_message(cls, raw: Mapping[str, str]) -> Envelope:
        """Read an envelope back from a message."""
        return cls(raw["id"], raw["saga"], raw["step"], Role(raw["role"]))


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
    return telemetry.OperationSpan(("sagaline", "step" if envelope.role is Role.ACTION
                                    else "compensation"), {
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
        store = self.engine.store
        saga = self.engine.registry.get(envelope.saga)
        step = saga.step(envelope.step)
        index = saga.index_of(step.name)
        role = envelope.role
        last = role is Role.ACTION and index == len(saga.steps) - 1
        refs, needed, policy = self._plan(saga, step, role, last)
        lease_s = self.engine.lease_s
        claim = store.begin(
            envelope.saga_id, role, step.name, index=index, lease_s=lease_s, needed=needed,
        )
        if claim.kind == "completed":
            if role is Role.ACTION and claim.cursor > index:
                raise Skip(f"{step.name} completed and the saga went on: a duplicate message")
            return claim.result
        if claim.kind == "busy":
            raise RetryIn(min(claim.wait_s + 0.1, BUSY_RECHECK_MAX_S))
        if claim.kind != "run":
            raise Skip(f"{role.value} {step.name} not run: {claim.kind} {claim.saga_status}")

        assert claim.inputs is not None and claim.results is not None
        heartbeat = Heartbeat(store, envelope.saga_id, role, step.name, claim.attempt, lease_s)
        ctx = StepContext(
            saga_id=envelope.saga_id, saga_name=saga.name, step=step.name, role=role,
            attempt=claim.attempt, correlation_id=claim.correlation_id,
            cancel_check=heartbeat.should_stop,
        )
        span = _operation_span(envelope, saga, index, claim.attempt, claim.correlation_id)
        try:
            arguments = resolve_all(refs, claim.inputs, claim.results)
            if claim.fault:
                raise InjectedFaultError(claim.fault, saga_id=envelope.saga_id, step=step.name)
            with heartbeat:
                result = _json.jsonable(call(ctx, **arguments))
        except SoftTimeLimitExceeded as exceeded:
            timeout = StepTimeoutError(
                f"{step.name} ran past its time limit of {time_limit_s(saga, step):g} s",
                saga_id=envelope.saga_id, step=step.name,
            )
            timeout.__cause__ = exceeded
            span.exception(timeout, retrying=policy.should_retry(timeout, claim.attempt))
            self._failed(envelope, role, step, claim.attempt, timeout, policy)
            raise timeout from exceeded
        except Exception as error:
            span.exception(error, retrying=policy.should_retry(error, claim.attempt))
            self._failed(envelope, role, step, claim.attempt, error, policy)
            raise
        span.stop()

        saga_result = None
        if last:
            saga_result = saga.build_result(claim.inputs, {**claim.results, step.name: result})
        following = ""
        if role is Role.ACTION and not last:
            following = saga.steps[index + 1].name
        outcome = store.complete(
            envelope.saga_id, role, step.name, attempt=claim.attempt, result=result,
            saga_result=saga_result, final=last, next_step=following,
        )
        if outcome == "stale":
            raise Skip(f"{role.value} {step.name} attempt {claim.attempt} lost its lease")
        if outcome == "late":
            # The saga was stopped while this ran: undo it, and do not go on with the chain.
            self.engine.continue_rollback(envelope.saga_id)
            raise Skip(f"{step.name} completed after its saga was stopped; compensating it")
        return result

    def _plan(self, saga: Saga, step: Step, role: Role, last: bool
              ) -> tuple[Mapping[str, Ref], list[str], RetryPolicy]:
        if role is Role.ACTION:
            needed = step.results_needed()
            if last:
                needed += [s for s in saga.results_for_return() if s not in needed]
            return step.args, [s for s in needed if s != step.name], saga.retry_for(step)
        return step.undo_args, step.undo_results_needed(), saga.compensation_retry_for(step)

    def _failed(self, envelope: Envelope, role: Role, step: Step, attempt: int,
                error: Exception, policy: RetryPolicy) -> None:
        """Record a failed attempt; raise :class:`RetryIn` when the policy retries it."""
        retry = policy.should_retry(error, attempt)
        delay = policy.delay(attempt) if retry else None
        record = describe_error(
            error, step=step.name, attempt=attempt, retryable=policy.is_retryable(error)
        )
        outcome = self.engine.store.fail(
            envelope.saga_id, role, step.name, attempt=attempt, error=record, retry_in_s=delay
        )
        if outcome == "stale":
            raise Skip(f"{role.value} {step.name} attempt {attempt} lost its lease") from error
        if outcome == "late":
            self.engine.continue_rollback(envelope.saga_id)
            raise Skip(f"{step.name} failed after its saga was stopped: not retried") from error
        if delay is not None:
            log.warning("[saga %s] %s %s attempt %d failed (%s); retrying in %.2f s",
                        envelope.saga_id, role.value, step.name, attempt, record["message"], delay)
            raise RetryIn(delay, error) from error
