"""The Celery wiring: saga tasks as Celery tasks, the chains they form, and the errbacks.

Everything that knows Celery's canvas lives here; the rest of the engine is plain Python.

- Each :class:`SagaTask` is registered on the app under its own name, with
  :class:`SagaCeleryTask` as its base. A message carries only an envelope of ids; the base
  class hands it to the :class:`~sagaline._runtime.Runtime` and turns the runtime's signals
  into ``Task.retry`` (which keeps the chain and its errback) and ``Ignore``.
- The steps between groups form one chain of immutable signatures with a chain-level
  ``link_error``. Celery attaches that errback to every task of the chain, but only the
  task that finally fails runs it, so it fires once per failure (celery-mechanics.md,
  section 1).
- A group is no Celery group or chord: each branch is a message of its own with the same
  errback, and the Lua script that records a branch says which branch starts next and
  which one completed the group (then the steps after it are sent). So there is no chord
  errback to fire once or N+1 times; ``fail_saga.lua`` turns the saga compensating once,
  however many branches fail. A fallback is a message of its own too.
- The errback, :func:`on_step_failed`, takes ``(request, exc, traceback)``, so the worker
  calls it inline. It turns the saga to compensating once (a Lua transition) and enqueues
  the first stage of the rollback.
- Compensations are single messages with their own errback, sent a stage at a time (a
  step, or a group's branches in parallel) by ``next_undo.lua``. A compensation that fails
  for good raises; :func:`on_compensation_failed` records it and goes on with the rest, so
  one failure never stops the others.
- Every message carries the saga id, correlation id and the saga's trace context as task
  headers (:func:`saga_headers`); a task and an errback run within that saga's
  :func:`~sagaline.telemetry.scope`, so log lines and spans carry them. A saga task returns
  nothing to Celery: results live in Redis, and Celery would log them.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import redis
from celery import Celery, Task, chain
from celery.canvas import Signature
from celery.exceptions import Ignore, Reject
from pydantic import ConfigDict, validate_call

from . import telemetry
from ._runtime import (
    Envelope,
    RetryIn,
    Skip,
    describe_error,
    time_limit_s,
)
from .errors import DefinitionError
from .parallel import Parallel
from .saga import Saga
from .status import Role, SagaStatus
from .store import Rollback
from .task import SagaTask

if TYPE_CHECKING:
    from .engine import Sagaline

log = logging.getLogger("sagaline.celery")

#: The keyword argument under which a message carries its envelope.
ENVELOPE = "sagaline"
#: Seconds between the soft time limit (the action is interrupted) and the hard one.
HARD_LIMIT_GRACE_S = 10.0
STEP_FAILED_TASK = "sagaline.step_failed"
COMPENSATION_FAILED_TASK = "sagaline.compensation_failed"
RECOVER_TASK = "sagaline.recover"
#: The task headers every step message carries (prefixed: Celery's request has a
#: ``correlation_id`` of its own, the task id).
SAGA_ID_HEADER = "sagaline_saga_id"
CORRELATION_HEADER = "sagaline_correlation_id"
TRACE_HEADER = "sagaline_traceparent"
#: The W3C header: the saga span, as the parent of the task's Celery spans; an instrumented
#: publisher replaces it with its own span (which is in the saga's trace but for a sweep's).
W3C_TRACE_HEADER = "traceparent"


class SagaCeleryTask(Task):  # type: ignore[misc]
    """The base of every saga task: runs a message through the engine's runtime.

    Called with the envelope keyword, it runs as a saga step; called any other way (a
    direct call in a unit test), it is the plain function.
    """

    abstract = True
    engine: Sagaline
    validated: Any

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run a step message, or call the function directly."""
        raw = kwargs.get(ENVELOPE)
        if raw is None or args or len(kwargs) != 1:
            return self.run(*args, **kwargs)
        envelope = Envelope.from_message(raw)
        try:
            return self._execute(envelope)
        finally:
            self.engine.outbox.flush_soon(envelope.saga_id)

    def _execute(self, envelope: Envelope) -> Any:
        try:
            with _scope_of(envelope, self.request):
                self.engine.runtime.execute(envelope, self.validated)
            return None
        except RetryIn as again:
            raise self.retry(countdown=again.delay_s, exc=again.cause, max_retries=None) from None
        except Skip as skip:
            log.info("[saga %s] %s", envelope.saga_id, skip)
            raise Ignore(str(skip)) from None
        except redis.RedisError as error:
            # The saga's record cannot be read or written: never go on unrecorded. The
            # message goes back to the queue; the recovery sweep also covers it.
            log.error("[saga %s] saga store unavailable (%s); requeueing %s",
                      envelope.saga_id, error, envelope.step)
            raise Reject(str(error), requeue=True) from error


def bind_task(engine: Sagaline, definition: SagaTask) -> Task:
    """Register a saga task on the engine's Celery app (once) and return the Celery task."""
    app: Celery = engine.app
    existing = app.tasks.get(definition.name)
    if existing is not None:
        if getattr(existing, "run", None) is not definition.fn:
            raise DefinitionError(
                f"two different functions are declared as saga task {definition.name!r}; "
                "give each its own name"
            )
        return existing
    task = app.task(
        base=SagaCeleryTask,
        name=definition.name,
        bind=False,
        typing=False,
        ignore_result=True,
        acks_late=True,
        reject_on_worker_lost=True,
        max_retries=None,
        shared=False,
        lazy=False,
    )(definition.fn)
    task.engine = engine
    engine.tasks[definition.name] = definition
    task.validated = validate_call(config=ConfigDict(arbitrary_types_allowed=True))(definition.fn)
    return task


def register_errbacks(engine: Sagaline) -> None:
    """Register the engine's errback tasks on its app."""
    app: Celery = engine.app

    @app.task(name=STEP_FAILED_TASK, shared=False, lazy=False, ignore_result=True)  # type: ignore[untyped-decorator]
    def step_failed(request: Any, exc: BaseException, traceback: Any) -> None:
        with _request_scope(request):
            on_step_failed(engine, request, exc)

    @app.task(name=COMPENSATION_FAILED_TASK, shared=False, lazy=False, ignore_result=True)  # type: ignore[untyped-decorator]
    def compensation_failed(request: Any, exc: BaseException, traceback: Any) -> None:
        with _request_scope(request):
            on_compensation_failed(engine, request, exc)

    @app.task(name=RECOVER_TASK, shared=False, lazy=False, ignore_result=True)  # type: ignore[untyped-decorator]
    def recover() -> dict[str, int]:
        """The recovery sweep, as beat runs it."""
        return engine.supervisor.recover()


def _envelope_of(request: Any) -> Envelope | None:
    raw = (getattr(request, "kwargs", None) or {}).get(ENVELOPE)
    return Envelope.from_message(raw) if raw else None


def _scope_of(envelope: Envelope, request: Any) -> Any:
    """The telemetry scope of a message, from its headers."""
    return telemetry.scope(envelope.saga_id, str(getattr(request, CORRELATION_HEADER, "") or ""),
                           str(getattr(request, TRACE_HEADER, "") or ""))


def _request_scope(request: Any) -> Any:
    """The telemetry scope of the failed message an errback handles (none if not a saga's)."""
    envelope = _envelope_of(request)
    return _scope_of(envelope, request) if envelope else contextlib.nullcontext()


def on_step_failed(engine: Sagaline, request: Any, exc: BaseException) -> None:
    """The forward chain's errback: start the rollback, exactly once per saga."""
    envelope = _envelope_of(request)
    if envelope is None:
        log.error("step errback called for a message without a saga envelope: %r", request)
        return
    try:
        _fail_forward(engine, envelope, exc)
    finally:
        engine.wake_parents()
        engine.outbox.flush_soon(envelope.saga_id)


def _fail_forward(engine: Sagaline, envelope: Envelope, exc: BaseException) -> None:
    saga = engine.definition_of(envelope.saga, envelope.saga_id)
    error = describe_error(exc, step=envelope.step)
    rollback = engine.store.fail_saga(
        envelope.saga_id, failed_step=envelope.step, error=error,
        table=saga.rollback_table(),
    )
    if rollback is None:
        if engine.store.status(envelope.saga_id) is SagaStatus.NEEDS_ATTENTION:
            log.error("[saga %s] %s gave up after the saga's pivot: it needs an operator",
                      envelope.saga_id, envelope.step)
        return
    log.warning("[saga %s] %s failed at %s (%s); compensating %s", envelope.saga_id, saga.name,
                envelope.step, error["message"], ", ".join(rollback.plan) or "nothing")
    start_rollback(engine, saga, envelope.saga_id, rollback)


def on_compensation_failed(engine: Sagaline, request: Any, exc: BaseException) -> None:
    """The compensation chain's errback: record the failure, go on with the rest."""
    envelope = _envelope_of(request)
    if envelope is None:
        log.error("compensation errback called without a saga envelope: %r", request)
        return
    engine.store.fail(
        envelope.saga_id, Role.COMPENSATION, envelope.step, attempt=0,
        error=describe_error(exc, step=envelope.step), retry_in_s=None,
    )
    log.error("[saga %s] compensation of %s failed (%s); going on with the rest",
              envelope.saga_id, envelope.step, exc)
    try:
        engine.continue_rollback(envelope.saga_id)
        engine.wake_parents()
    finally:
        engine.outbox.flush_soon(envelope.saga_id)


def headers_for(saga_id: str, correlation_id: str, traceparent: str) -> dict[str, str]:
    """The task headers of a saga's messages."""
    headers = {SAGA_ID_HEADER: saga_id, CORRELATION_HEADER: correlation_id,
               TRACE_HEADER: traceparent}
    if traceparent:
        headers[W3C_TRACE_HEADER] = traceparent
    return headers


def saga_headers(engine: Sagaline, saga_id: str) -> dict[str, str]:
    """The task headers of a recorded saga's messages (one read of its record)."""
    return headers_for(saga_id, *engine.store.correlation_of(saga_id))


def step_signature(engine: Sagaline, saga: Saga, saga_id: str, step_name: str,
                   role: Role, headers: Mapping[str, str], undoes_fallback: bool = False
                   ) -> Signature:
    """The immutable signature of one step's action, fallback or compensation."""
    step = saga.step(step_name)
    definition = step.task_for(role, undoes_fallback)
    suffix = "-undo" if role is Role.COMPENSATION else ""
    if (role is Role.FALLBACK or undoes_fallback) and step.fallback is not None:
        suffix = "-fallback" + suffix
    if definition is None:
        raise DefinitionError(f"step {step_name!r} of saga {saga.name!r} has no {role.value}")
    task = engine.app.tasks[definition.name]
    envelope = Envelope(saga_id, saga.name, step_name, role, undoes_fallback).to_message()
    limit = time_limit_s(saga, step)
    options: dict[str, Any] = {
        "task_id": f"{saga_id}-{step_name}{suffix}",
        "soft_time_limit": limit,
        "time_limit": limit + HARD_LIMIT_GRACE_S,
        "headers": dict(headers),
    }
    queue = step.queue or definition.queue
    if queue:
        options["queue"] = queue
    signature: Signature = task.si(**{ENVELOPE: envelope}).set(**options)
    return signature


def forward_chain(engine: Sagaline, saga: Saga, saga_id: str, start_at: int = 0,
                  headers: Mapping[str, str] | None = None) -> Signature:
    """The steps from element ``start_at`` up to the next group, one errback for all.

    ``headers`` default to the recorded saga's (:func:`saga_headers`).
    """
    headers = saga_headers(engine, saga_id) if headers is None else headers
    steps = [step_signature(engine, saga, saga_id, s.name, Role.ACTION, headers)
             for s in saga.segment(start_at)]
    errback = engine.app.tasks[STEP_FAILED_TASK].s()
    signature: Signature = chain(*steps).on_error(errback)
    return signature


def drive_forward(engine: Sagaline, saga: Saga, saga_id: str, start_at: int,
                  headers: Mapping[str, str] | None = None) -> None:
    """Send the forward path from element ``start_at``.

    A step: the chain of steps up to the next group. A group: the branches it may start
    (the others start as these complete). Past the last element: complete the saga.
    ``headers`` default to the recorded saga's (:func:`saga_headers`).
    """
    if start_at >= len(saga.elements):
        engine.finish(saga, saga_id)
        return
    element = saga.elements[start_at]
    if isinstance(element, Parallel):
        send(engine, saga, saga_id, engine.store.open_group(saga_id, element), Role.ACTION,
             headers=headers)
        return
    forward_chain(engine, saga, saga_id, start_at, headers).apply_async()


def send(engine: Sagaline, saga: Saga, saga_id: str, steps: list[str], role: Role,
         undoes_fallback: bool = False, headers: Mapping[str, str] | None = None) -> None:
    """Send single messages (branches, a fallback, compensations), each with its errback."""
    if not steps:
        return
    name = COMPENSATION_FAILED_TASK if role is Role.COMPENSATION else STEP_FAILED_TASK
    headers = saga_headers(engine, saga_id) if headers is None else headers
    for step in steps:
        signature = step_signature(engine, saga, saga_id, step, role, headers,
                                   undoes_fallback)
        signature.on_error(engine.app.tasks[name].s()).apply_async()


__all__ = ["SagaCeleryTask", "bind_task", "drive_forward", "forward_chain", "send"]


def start_rollback(engine: Sagaline, saga: Saga, saga_id: str, rollback: Rollback) -> None:
    """Enqueue a rollback just planned (its first stage), unless it awaits an action."""
    if rollback.plan:
        engine.continue_rollback(saga_id)


def forward_task_ids(saga: Saga, saga_id: str, start_at: int = 0) -> list[str]:
    """The task ids of the forward messages from step ``start_at`` (to revoke them)."""
    ids = [f"{saga_id}-{s.name}" for s in saga.steps[start_at:]]
    return ids + [f"{saga_id}-{s.name}-fallback" for s in saga.steps if s.fallback]
