"""Structured log lines: one per transition, each with the saga's correlation id.

``install()`` attaches a handler that writes, on the ``sagaline.transitions`` logger::

    [saga 01J...] step 2/5 reserve_inventory succeeded in 12 ms (correlation 01J...)

Starts of attempts are logged at DEBUG, the rest at INFO (WARNING for failures). Lines name
ids, steps, durations and error types and messages; never inputs, arguments or results,
which may hold personal data or secrets.

:class:`SagaContextFilter` puts the ids of the saga a thread works for on *every* log record
(``%(saga_id)s``, ``%(correlation_id)s``, and ``%(saga_context)s``, which is
``" [saga ID correlation CID]"`` within a step and empty elsewhere), so a participant's own
log lines carry them without passing them around. Add it to the handlers with
:func:`add_context_filter`; :func:`scope_celery_tasks` widens the scope from the step to the
whole Celery task, so Celery's own lines about it (``succeeded``, ``raised``, ``retry``)
carry the ids too.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Mapping
from typing import Any

from celery.signals import task_postrun, task_prerun

from sagaline import telemetry
from sagaline.runtime.message import CORRELATION_HEADER, SAGA_ID_HEADER, TRACE_HEADER

LOGGER_NAME = "sagaline.transitions"
HANDLER_ID = "sagaline.exporters.logs"

_VERBS = {"start": "started", "stop": "succeeded", "exception": "failed"}


class SagaContextFilter(logging.Filter):
    """Adds the current saga's ids to each record (it never drops one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Set ``saga_id``, ``correlation_id`` and ``saga_context`` on the record."""
        scope = telemetry.current_scope()
        if not hasattr(record, "saga_id"):
            record.__dict__["saga_id"] = scope.saga_id if scope else "-"
            record.__dict__["correlation_id"] = (scope.correlation_id or "-") if scope else "-"
        transition = getattr(record, "sagaline_transition", False)
        fields = record.__dict__
        ids = f" [saga {fields['saga_id']} correlation {fields['correlation_id']}]"
        record.__dict__["saga_context"] = ids if scope and not transition else ""
        return True


def add_context_filter(logger: logging.Logger | None = None) -> None:
    """Add a :class:`SagaContextFilter` to every handler of ``logger`` (the root logger)."""
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, SagaContextFilter) for f in handler.filters):
            handler.addFilter(SagaContextFilter())


def scope_celery_tasks() -> None:
    """Work within a saga's scope for the whole of each of its tasks, in this process."""
    tokens: dict[str, contextvars.Token[telemetry.SagaScope | None]] = {}

    @task_prerun.connect(weak=False)  # type: ignore[untyped-decorator]
    def _enter(task_id: str, task: Any, **_: Any) -> None:
        request = task.request
        saga_id = getattr(request, SAGA_ID_HEADER, None)
        if saga_id:
            tokens[task_id] = telemetry.enter_scope(
                str(saga_id), str(getattr(request, CORRELATION_HEADER, "") or ""),
                str(getattr(request, TRACE_HEADER, "") or ""),
            )

    @task_postrun.connect(weak=False)  # type: ignore[untyped-decorator]
    def _exit(task_id: str, **_: Any) -> None:
        token = tokens.pop(task_id, None)
        if token is not None:
            telemetry.exit_scope(token)


def describe(event: telemetry.Event, measurements: Mapping[str, float],
             metadata: Mapping[str, Any]) -> tuple[int, str]:
    """The level and text of one transition's log line."""
    _, kind, what = event
    ms = f" in {measurements['duration_s'] * 1000:.0f} ms" if "duration_s" in measurements else ""
    saga = metadata.get("saga", "")
    tail = f" (correlation {metadata.get('correlation_id') or '-'})"
    head = f"[saga {metadata.get('saga_id')}]"
    if kind == "saga":
        error = metadata.get("error") or {}
        if what == "start":
            return logging.INFO, f"{head} {saga} started, {metadata.get('total')} steps{tail}"
        if what == "fail":
            cause = f": {error.get('type', '').rsplit('.', 1)[-1]}: {error.get('message')}" \
                if error else ""
            at = metadata.get("failed_step") or metadata.get("reason")
            return logging.WARNING, f"{head} {saga} failed at {at}{cause}{tail}"
        if what == "compensate":
            return logging.INFO, f"{head} {saga} compensating ({metadata.get('reason')}){tail}"
        level = logging.INFO if what in ("complete", "compensated", "cancelled") \
            else logging.WARNING
        return level, f"{head} {saga} {metadata.get('status')}{ms}{tail}"
    if what == "progress":
        total = f"/{measurements['total']:g}" if "total" in measurements else ""
        return logging.DEBUG, (f"{head} step {metadata.get('step')} progress "
                               f"{measurements.get('done', 0):g}{total}{tail}")
    position = f"{metadata.get('position')}/{metadata.get('total')}"
    attempt = metadata.get("attempt", 1)
    text = f"{head} {kind} {position} {metadata.get('step')} {_VERBS[what]}"
    if what == "start":
        return logging.DEBUG, f"{text}, attempt {attempt}{tail}"
    on_attempt = f" on attempt {attempt}" if attempt != 1 else ""
    if what == "stop":
        return logging.INFO, f"{text}{on_attempt}{ms}{tail}"
    error = metadata.get("error")
    then = "retrying" if metadata.get("retrying") else "not retried"
    return logging.WARNING, (f"{text}{on_attempt}{ms}: {type(error).__name__}: {error}; "
                             f"{then}{tail}")


def install(logger: logging.Logger | None = None) -> None:
    """Log every transition on ``logger`` (``sagaline.transitions``) in this process.

    Raises:
        ValueError: It is installed already.
    """
    target = logger or logging.getLogger(LOGGER_NAME)

    def write(event: telemetry.Event, measurements: Mapping[str, float],
              metadata: Mapping[str, Any]) -> None:
        level, text = describe(event, measurements, metadata)
        if target.isEnabledFor(level):
            target.log(level, text, extra={
                "sagaline_transition": True, "saga_id": metadata.get("saga_id") or "-",
                "correlation_id": metadata.get("correlation_id") or "-",
            })

    telemetry.attach(HANDLER_ID, telemetry.EVENTS, write)


def uninstall() -> bool:
    """Stop logging transitions; ``False`` if it was not installed."""
    return telemetry.detach(HANDLER_ID)
