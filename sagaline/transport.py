"""The Celery transport: saga tasks as Celery tasks, the chains they form, and the errbacks.

Everything that knows Celery lives here; the runtime (:mod:`sagaline.runtime`) decides what
runs and this module only builds and sends the messages, and hands each delivery back.

- Each :class:`~sagaline.SagaTask` is registered on the app under its own name, with
  :class:`SagaCeleryTask` as its base. A message carries only an envelope of ids; the base
  class hands it to :meth:`Runtime.deliver <sagaline.runtime.attempt.Runtime.deliver>`
  and turns the runtime's signals into ``Task.retry`` (which keeps the chain and its
  errback) and ``Ignore``, and Celery's soft time limit into a
  :class:`~sagaline.errors.StepTimeoutError`.
- Celery's worker sends no final event for a task that raises ``Ignore`` (Flower would
  show it STARTED for ever), and raising anything else would fire the chain's errback. So
  before ``Ignore`` the task sends the event its skip's
  :class:`~sagaline.runtime.message.Ending` names, with the fields the worker's own carry:
  ``task-succeeded``, ``task-failed`` (the error that made the action give up), or
  ``task-revoked`` (nothing ran; a monitor keeps what another delivery of the operation
  showed, since every message of one operation has the same task id).
- The steps between groups form one chain of immutable signatures with a chain-level
  ``link_error``. Celery attaches that errback to every task of the chain, but only the
  task that finally fails runs it, so it fires once per failure (celery-mechanics.md,
  section 1).
- A group is no Celery group or chord: each branch is a message of its own with the same
  errback (the store says which branch starts next and which one completed the group). A
  fallback and each compensation are messages of their own too, a compensation with its
  own errback.
- The errbacks take ``(request, exc, traceback)``, so the worker calls them inline; each is
  a three-line adapter to the runtime.
- Every message carries the saga id, correlation id and the saga's trace context as task
  headers; a task and an errback run within that saga's :func:`~sagaline.telemetry.scope`,
  so log lines and spans carry them. A saga task returns nothing to Celery: results live in
  Redis, and Celery would log them.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import redis
from celery import Celery, Task, chain
from celery.canvas import Signature
from celery.exceptions import Ignore, Reject, SoftTimeLimitExceeded
from kombu.utils.encoding import safe_repr
from pydantic import ConfigDict, validate_call

from sagaline import codec, telemetry
from sagaline.context import StepContext
from sagaline.errors import ConfigurationError, DefinitionError, StepTimeoutError
from sagaline.runtime.attempt import Runtime
from sagaline.runtime.message import (
    CORRELATION_HEADER,
    TRACE_HEADER,
    Ending,
    Envelope,
    RetryIn,
    Skip,
)
from sagaline.runtime.supervisor import Supervisor
from sagaline.saga import Saga
from sagaline.status import Role
from sagaline.task import SagaTask

log = logging.getLogger("sagaline.celery")

#: The keyword argument under which a message carries its envelope.
ENVELOPE = "sagaline"
#: Seconds between the soft time limit (the action is interrupted) and the hard one.
HARD_LIMIT_GRACE_S = 10.0
STEP_FAILED_TASK = "sagaline.step_failed"
COMPENSATION_FAILED_TASK = "sagaline.compensation_failed"
RECOVER_TASK = "sagaline.recover"

_SAFE_SERIALIZERS = {"json", "application/json"}


class SagaCeleryTask(Task):  # type: ignore[misc]
    """The base of every saga task: hands a message to the runtime.

    A message with the engine's envelope runs as a saga step. A direct call (a unit test
    calling the task) is the plain function. A message without the envelope (someone
    called ``.delay()`` on a saga task) is refused, because it would run the participant
    with no saga record, unless the engine allows it (``run_bare_messages``, for tests).
    """

    abstract = True
    runtime: Runtime
    validated: Any
    run_bare_messages: bool = False

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run a step message, or call the function directly."""
        raw = kwargs.get(ENVELOPE)
        envelope = _envelope_in(raw) if not args and len(kwargs) == 1 else None
        if envelope is None:
            if self.request.called_directly or self.run_bare_messages:
                return self.run(*args, **kwargs)
            log.error("refused a message for saga task %s without a saga envelope (task id "
                      "%s, keyword arguments %s): saga tasks run only as steps of a saga; "
                      "start the saga instead", self.name, self.request.id,
                      sorted(kwargs) or "none")
            raise Reject(f"{self.name} runs only as a step of a saga: start the saga, do not "
                         "send the task", requeue=False)
        started = time.monotonic()
        try:
            with _scope_of(envelope, self.request):
                self.runtime.deliver(envelope, self._call, self._show_progress)
            return None
        except RetryIn as again:
            raise self.retry(countdown=again.delay_s, exc=again.cause, max_retries=None) from None
        except Skip as skip:
            log.info("[saga %s] %s", envelope.saga_id, skip)
            self._show_ending(skip, time.monotonic() - started)
            raise Ignore(str(skip)) from None
        except redis.RedisError as error:
            # The saga's record cannot be read or written: never go on unrecorded. The
            # message goes back to the queue; the recovery sweep also covers it.
            log.error("[saga %s] saga store unavailable (%s); requeueing %s",
                      envelope.saga_id, error, envelope.step)
            raise Reject(str(error), requeue=True) from error

    def _show_progress(self, report: dict[str, Any]) -> None:
        """Show a progress report in Flower: a ``task-progress`` event.

        Celery turns an event type it does not know into the task's state (``PROGRESS``),
        and Flower serialises only a task's own fields, so the report travels as the task's
        ``result`` (JSON text), which Flower's API and task page show while it runs.
        """
        if self.request.called_directly or not self.request.id:
            return
        self.send_event("task-progress", result=codec.dumps(report))

    def _show_ending(self, skip: Skip, runtime_s: float) -> None:
        """End a dropped message's task in Flower as the skip's ending says.

        The worker sends no event for an ignored task; this sends the one it would have
        sent (celery/worker/request.py), with the same fields. An event that cannot be sent
        is logged: monitoring never changes what happens to the saga.
        """
        if self.request.called_directly or not self.request.id:
            return
        try:
            if skip.ending is Ending.SUCCEEDED:
                self.send_event("task-succeeded", result=str(skip), runtime=runtime_s)
            elif skip.ending is Ending.FAILED:
                error = skip.error or skip
                self.send_event("task-failed",
                                exception=safe_repr(error),  # type: ignore[no-untyped-call]
                                traceback="".join(traceback.format_exception(error)))
            else:
                self.send_event("task-revoked", terminated=False, signum=None, expired=False)
        except Exception as error:  # the broker is away: the saga goes on all the same
            log.warning("task %s (%s) not shown as %s in Flower: %s", self.request.id,
                        self.name, skip.ending.value, error)

    def _call(self, ctx: StepContext, **arguments: Any) -> Any:
        """Call the function, its soft time limit turned into the engine's timeout."""
        try:
            return self.validated(ctx, **arguments)
        except SoftTimeLimitExceeded as exceeded:
            soft = (getattr(self.request, "timelimit", None) or (None, None))[1]
            limit = f" of {float(soft):g} s" if soft else ""
            raise StepTimeoutError(f"{ctx.step} ran past its time limit{limit}",
                                   saga_id=ctx.saga_id, step=ctx.step) from exceeded


def check_serialization(app: Celery) -> None:
    """Refuse an app that would send or accept anything but JSON.

    Raises:
        ConfigurationError: The app would accept pickle or another unsafe serializer.
    """
    conf = app.conf
    problems = []
    for setting in ("task_serializer", "result_serializer"):
        if conf.get(setting) not in _SAFE_SERIALIZERS:
            problems.append(f"{setting}={conf.get(setting)!r}")
    for setting in ("accept_content", "result_accept_content"):
        values = conf.get(setting) or conf.get("accept_content") or []
        bad = [v for v in values if v not in _SAFE_SERIALIZERS]
        if bad:
            problems.append(f"{setting} includes {bad!r}")
    if problems:
        raise ConfigurationError(
            "Sagaline runs on JSON only (pickle lets anyone who can write to the broker run "
            f"code on workers); fix: {', '.join(problems)}"
        )


class CeleryTransport:
    """Carries a runtime's messages on a Celery app (implements ``Transport``).

    Args:
        app: The Celery app; it must accept JSON only (pickle is refused).
        run_bare_messages: Run a saga task's message that carries no saga envelope as the
            plain function (unit tests only); by default it is refused.

    Raises:
        ConfigurationError: The app would accept pickle or another unsafe serializer.
    """

    def __init__(self, app: Celery, *, run_bare_messages: bool = False) -> None:
        """Carry messages on ``app``; :meth:`bind` connects it to a runtime.

        ``run_bare_messages``: a message for a saga task without the engine's envelope runs
        the plain function instead of being refused (unit tests only).
        """
        check_serialization(app)
        self.app = app
        self.run_bare_messages = run_bare_messages
        self.runtime: Runtime | None = None

    def bind(self, runtime: Runtime, supervisor: Supervisor) -> None:
        """Deliver messages to ``runtime``; register the errbacks and the sweep's task."""
        self.runtime = runtime
        app = self.app

        @app.task(name=STEP_FAILED_TASK, shared=False, lazy=False, ignore_result=True)  # type: ignore[untyped-decorator]
        def step_failed(request: Any, exc: BaseException, traceback: Any) -> None:
            _errback(request, exc, runtime.step_failed)

        @app.task(name=COMPENSATION_FAILED_TASK, shared=False, lazy=False, ignore_result=True)  # type: ignore[untyped-decorator]
        def compensation_failed(request: Any, exc: BaseException, traceback: Any) -> None:
            _errback(request, exc, runtime.compensation_failed)

        @app.task(name=RECOVER_TASK, shared=False, lazy=False, ignore_result=True)  # type: ignore[untyped-decorator]
        def recover() -> dict[str, int]:
            """The recovery sweep, as beat runs it."""
            return supervisor.recover()

    def register(self, definition: SagaTask) -> Task:
        """Register a saga task on the app (once) and return the Celery task.

        Raises:
            DefinitionError: Another function is registered under the same name.
            ConfigurationError: The transport is not bound to a runtime yet (:meth:`bind`).
        """
        if self.runtime is None:
            raise ConfigurationError("bind the transport to a runtime before registering "
                                     "saga tasks on it")
        existing = self.app.tasks.get(definition.name)
        if existing is not None:
            if getattr(existing, "run", None) is not definition.fn:
                raise DefinitionError(
                    f"two different functions are declared as saga task {definition.name!r}; "
                    "give each its own name"
                )
            return existing
        task = self.app.task(
            base=SagaCeleryTask, name=definition.name, bind=False, typing=False,
            ignore_result=True, acks_late=True, reject_on_worker_lost=True, max_retries=None,
            shared=False, lazy=False,
        )(definition.fn)
        task.runtime = self.runtime
        task.run_bare_messages = self.run_bare_messages
        task.validated = validate_call(config=ConfigDict(arbitrary_types_allowed=True))(
            definition.fn)
        return task

    # -- the Transport port ---------------------------------------------------------------

    def send_chain(self, saga: Saga, saga_id: str, steps: Sequence[str],
                   headers: Mapping[str, str], *, countdown: float | None = None) -> None:
        """Send the actions of ``steps`` as one chain with one errback for all."""
        signatures = [self._signature(saga, saga_id, s, Role.ACTION, headers) for s in steps]
        errback = self.app.tasks[STEP_FAILED_TASK].s()
        chain(*signatures).on_error(errback).apply_async(countdown=countdown)

    def send(self, saga: Saga, saga_id: str, steps: Sequence[str], role: Role, *,
             headers: Mapping[str, str], undoes_fallback: bool = False,
             countdown: float | None = None) -> None:
        """Send single messages (branches, a fallback, compensations), each with its errback."""
        name = COMPENSATION_FAILED_TASK if role is Role.COMPENSATION else STEP_FAILED_TASK
        for step in steps:
            signature = self._signature(saga, saga_id, step, role, headers, undoes_fallback)
            signature.on_error(self.app.tasks[name].s()).apply_async(countdown=countdown)

    def revoke(self, task_ids: Sequence[str]) -> None:
        """Revoke queued messages by task id."""
        self.app.control.revoke(list(task_ids))

    def _signature(self, saga: Saga, saga_id: str, step_name: str, role: Role,
                   headers: Mapping[str, str], undoes_fallback: bool = False) -> Signature:
        """The immutable signature of one step's action, fallback or compensation."""
        step = saga.step(step_name)
        definition = step.task_for(role, undoes_fallback)
        if definition is None:
            raise DefinitionError(f"step {step_name!r} of saga {saga.name!r} has no {role.value}")
        envelope = Envelope(saga_id, saga.name, step_name, role, undoes_fallback)
        limit = saga.time_limit_for(step).total_seconds()
        options: dict[str, Any] = {
            "task_id": envelope.task_id(step.fallback is not None),
            "soft_time_limit": limit,
            "time_limit": limit + HARD_LIMIT_GRACE_S,
            "headers": dict(headers),
        }
        queue = step.queue or definition.queue
        if queue:
            options["queue"] = queue
        signature: Signature = self.app.tasks[definition.name].si(
            **{ENVELOPE: envelope.to_message()}).set(**options)
        return signature


def _envelope_in(raw: Any) -> Envelope | None:
    """The envelope a message carries, or ``None`` when it carries none (or a malformed one)."""
    if not isinstance(raw, dict):
        return None
    try:
        return Envelope.from_message(raw)
    except (KeyError, TypeError, ValueError):
        return None


def _errback(request: Any, exc: BaseException,
             handle: Callable[[Envelope, BaseException], None]) -> None:
    """Hand a failed message's envelope to the runtime, within its saga's scope."""
    raw = (getattr(request, "kwargs", None) or {}).get(ENVELOPE)
    if not raw:
        log.error("errback called for a message without a saga envelope: %r", request)
        return
    envelope = Envelope.from_message(raw)
    with _scope_of(envelope, request):
        handle(envelope, exc)


def _scope_of(envelope: Envelope, request: Any) -> Any:
    """The telemetry scope of a message, from its headers."""
    return telemetry.scope(envelope.saga_id, str(getattr(request, CORRELATION_HEADER, "") or ""),
                           str(getattr(request, TRACE_HEADER, "") or ""))


__all__ = ["ENVELOPE", "CeleryTransport", "SagaCeleryTask", "check_serialization"]
