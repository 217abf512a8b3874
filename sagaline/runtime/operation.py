"""One operation of a step, planned: what it reads, how it retries, how telemetry hears of it.

An operation is a step's action, its fallback, or its compensation (which undoes the
action, or the fallback when that is what completed).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sagaline import telemetry
from sagaline.policy import RetryPolicy
from sagaline.refs import Ref, steps_referenced
from sagaline.runtime.message import Envelope
from sagaline.saga import Saga
from sagaline.status import Role
from sagaline.step import Step


@dataclass(frozen=True)
class Plan:
    """What one operation needs before it is claimed."""

    saga: Saga
    """The definition the run follows (with the steps its steps added)."""
    step: Step
    """The step the operation belongs to."""
    index: int
    """The step's position in the saga, from 0."""
    refs: Mapping[str, Ref]
    """Where its arguments come from."""
    needed: list[str]
    """Earlier steps whose results the claim reads (for the arguments, or the result)."""
    policy: RetryPolicy
    """How often it is attempted."""
    last: bool
    """Whether it is the saga's last forward step (its completion completes the saga)."""


def operation_span(envelope: Envelope, saga: Saga, index: int, attempt: int,
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


def plan_for(saga: Saga, envelope: Envelope) -> Plan:
    """The operation's definition, arguments, the results it reads and its retry policy."""
    step = saga.step(envelope.step)
    index = saga.index_of(step.name)
    role = envelope.role
    if role is Role.COMPENSATION:
        undo = step.undo_args
        if envelope.undoes_fallback and step.fallback is not None:
            undo = step.fallback.undo_args(step.name)
        return Plan(saga, step, index, undo, steps_referenced(undo),
                    saga.compensation_retry_for(step), False)
    last = saga.is_last(step.name)
    refs, policy = step.args, saga.retry_for(step)
    if role is Role.FALLBACK and step.fallback is not None:
        refs, policy = step.fallback.args, step.fallback.retry or saga.retry
    needed = steps_referenced(refs)
    if last:
        needed += [s for s in saga.results_for_return() if s not in needed]
    return Plan(saga, step, index, refs, [s for s in needed if s != step.name], policy, last)
