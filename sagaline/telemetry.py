"""Lifecycle hooks that any code can attach to, as Erlang's ``:telemetry``.

The engine calls :func:`execute` at each transition of a saga run; handlers attached with
:func:`attach` receive ``(event, measurements, metadata)`` in the process where the
transition happened (the starting process for ``saga start``, a worker for the rest, or
whichever process ran a sweep or a cancel). The exporters in :mod:`sagaline.exporters`
(logs, Prometheus, OpenTelemetry) are built on these hooks and nothing else.

Events (each a tuple, ``("sagaline", "saga", "start")``):

- ``saga start``: recorded and enqueued (metadata: ``saga``, ``saga_id``,
  ``correlation_id``, ``traceparent``, ``total``).
- ``saga fail``: the forward path failed for good, or the deadline passed (``reason``
  ``failed`` or ``deadline``, ``failed_step``, ``error``); ``saga compensate`` follows.
- ``saga compensate``: the saga turned to compensating (``reason``: ``failed``,
  ``deadline``, ``cancelled`` or ``retry`` for a retried compensation).
- ``saga complete``, ``saga compensated``, ``saga compensation_failed``, ``saga cancelled``,
  ``saga abandon`` (its first message could not be enqueued): the run's final state, with
  ``duration_s`` from creation to the end.
- ``step start|stop|exception`` and ``compensation start|stop|exception``: one attempt of
  a step's action or compensation (``step``, ``role``, ``position``, ``total``, ``attempt``;
  ``error`` and ``retrying`` on ``exception``), with ``duration_s`` on ``stop`` and
  ``exception``.
- ``step progress``: an operation reported progress with ``ctx.progress`` (measurements
  ``done`` and, when known, ``total``; metadata ``saga``, ``saga_id``, ``step``, ``role``,
  ``attempt``, ``metrics``).

Saga events other than ``start`` come from the store: every saga status move is one Lua
script, which reports the move, so each fires exactly once per run whoever made it.

Measurements carry their unit in the name: ``duration_s`` (seconds, float) and
``system_time_s`` (seconds since the epoch). A handler that raises is logged and detached,
as in Erlang: telemetry never breaks a saga.

Example:
    >>> def slow_steps(event, measurements, metadata):
    ...     if measurements["duration_s"] > 1:
    ...         print(metadata["saga_id"], metadata["step"], "was slow")
    >>> attach("slow-steps", [STEP_STOP], slow_steps)
"""

from __future__ import annotations

import contextvars
import logging
import secrets
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from opentelemetry import trace as otel_trace

from sagaline import codec

log = logging.getLogger("sagaline.telemetry")

Event = tuple[str, str, str]

SAGA_START: Event = ("sagaline", "saga", "start")
SAGA_FAIL: Event = ("sagaline", "saga", "fail")
SAGA_COMPENSATE: Event = ("sagaline", "saga", "compensate")
SAGA_COMPLETE: Event = ("sagaline", "saga", "complete")
SAGA_COMPENSATED: Event = ("sagaline", "saga", "compensated")
SAGA_COMPENSATION_FAILED: Event = ("sagaline", "saga", "compensation_failed")
SAGA_CANCELLED: Event = ("sagaline", "saga", "cancelled")
SAGA_ABANDON: Event = ("sagaline", "saga", "abandon")
#: A step after the pivot gave up: the saga waits for an operator (not a final state).
SAGA_NEEDS_ATTENTION: Event = ("sagaline", "saga", "needs_attention")
STEP_START: Event = ("sagaline", "step", "start")
STEP_STOP: Event = ("sagaline", "step", "stop")
STEP_EXCEPTION: Event = ("sagaline", "step", "exception")
STEP_PROGRESS: Event = ("sagaline", "step", "progress")
COMPENSATION_START: Event = ("sagaline", "compensation", "start")
COMPENSATION_STOP: Event = ("sagaline", "compensation", "stop")
COMPENSATION_EXCEPTION: Event = ("sagaline", "compensation", "exception")

#: The final-state events, by the status the run ended in.
CONCLUSIONS: dict[str, Event] = {
    "completed": SAGA_COMPLETE,
    "compensated": SAGA_COMPENSATED,
    "compensation_failed": SAGA_COMPENSATION_FAILED,
    "cancelled": SAGA_CANCELLED,
    "failed": SAGA_ABANDON,
}
SAGA_EVENTS: frozenset[Event] = frozenset(
    {SAGA_START, SAGA_FAIL, SAGA_COMPENSATE, SAGA_NEEDS_ATTENTION, *CONCLUSIONS.values()}
)
OPERATION_EVENTS: frozenset[Event] = frozenset({
    STEP_START, STEP_STOP, STEP_EXCEPTION,
    COMPENSATION_START, COMPENSATION_STOP, COMPENSATION_EXCEPTION,
})
#: Every event the engine emits (progress reports apart: they come many times an attempt).
EVENTS: frozenset[Event] = SAGA_EVENTS | OPERATION_EVENTS | {STEP_PROGRESS}


class Handler(Protocol):
    """A function attached to events."""

    def __call__(self, event: Event, measurements: Mapping[str, float],
                 metadata: Mapping[str, Any]) -> None:
        """Handle one event; it runs in the emitting thread, so keep it quick."""


_lock = threading.Lock()
_handlers: dict[str, tuple[frozenset[Event], Handler]] = {}
#: Rebuilt on every attach and detach, so :func:`execute` reads it without a lock.
_by_event: dict[Event, tuple[tuple[str, Handler], ...]] = {}


def attach(handler_id: str, events: Iterable[Event], handler: Handler) -> None:
    """Call ``handler`` on each of ``events`` in this process, until detached.

    Args:
        handler_id: A unique name, used to detach it.
        events: The events to receive (see the module docstring; ``EVENTS`` is all).
        handler: Called as ``handler(event, measurements, metadata)``.

    Raises:
        ValueError: The id is taken, or an event under ``sagaline`` is not one the engine
            emits (a misspelling would never fire).
    """
    wanted = frozenset(tuple(e) for e in events)
    unknown = [e for e in wanted if e[:1] == ("sagaline",) and e not in EVENTS]
    if unknown:
        raise ValueError(f"sagaline emits no event {unknown[0]!r}; known: "
                         + ", ".join(" ".join(e[1:]) for e in sorted(EVENTS)))
    with _lock:
        if handler_id in _handlers:
            raise ValueError(f"a telemetry handler {handler_id!r} is attached already; "
                             "detach it first or choose another id")
        _handlers[handler_id] = (wanted, handler)  # type: ignore[assignment]
        _rebuild()


def detach(handler_id: str) -> bool:
    """Stop calling a handler; ``False`` if none of that id was attached."""
    with _lock:
        found = _handlers.pop(handler_id, None) is not None
        _rebuild()
    return found


def attached(event: Event | None = None) -> list[str]:
    """Ids of the handlers attached (to ``event``, or to any)."""
    if event is None:
        return sorted(_handlers)
    return [handler_id for handler_id, _ in _by_event.get(event, ())]


def execute(event: Event, measurements: Mapping[str, float],
            metadata: Mapping[str, Any]) -> None:
    """Call every handler attached to ``event``; a handler that raises is detached."""
    for handler_id, handler in _by_event.get(event, ()):
        try:
            handler(event, measurements, metadata)
        except Exception:
            log.exception("telemetry handler %r failed on %s; detaching it",
                          handler_id, " ".join(event))
            detach(handler_id)


def _rebuild() -> None:
    table: dict[Event, list[tuple[str, Handler]]] = {}
    for handler_id, (events, handler) in _handlers.items():
        for event in events:
            table.setdefault(event, []).append((handler_id, handler))
    global _by_event
    _by_event = {event: tuple(rows) for event, rows in table.items()}


class OperationSpan:
    """One attempt of a step's action or compensation: emits start, then stop or exception.

    Args:
        prefix: ``("sagaline", "step")`` or ``("sagaline", "compensation")``.
        metadata: The attempt's metadata (see the module docstring).
    """

    def __init__(self, prefix: tuple[str, str], metadata: Mapping[str, Any]) -> None:
        """Emit the start event and start the clock."""
        self.prefix = prefix
        self.metadata = dict(metadata)
        execute((*prefix, "start"), {"system_time_s": time.time()}, self.metadata)
        self._started = time.perf_counter()

    def stop(self) -> None:
        """The attempt returned."""
        execute((*self.prefix, "stop"), self._duration(), self.metadata)

    def exception(self, error: BaseException, *, retrying: bool) -> None:
        """The attempt raised ``error``; ``retrying`` says whether another attempt follows."""
        execute((*self.prefix, "exception"), self._duration(),
                {**self.metadata, "error": error, "retrying": retrying})

    def _duration(self) -> dict[str, float]:
        return {"duration_s": time.perf_counter() - self._started}


def announce_moves(saga_id: str, moves: list[str], info: Mapping[str, str]) -> None:
    """Emit the event of each saga status move a store script made (``old>new``).

    ``info`` is the saga's record as the script read it after the moves.
    """
    created, at = float(info["created_at"] or 0), float(info["at"] or 0)
    metadata: dict[str, Any] = {
        "saga": info["saga"], "saga_id": saga_id, "correlation_id": info["correlation_id"],
        "traceparent": info["traceparent"], "trace_parent_id": info["trace_parent_id"],
        "created_at": created, "at": at, "failed_step": info["failed_step"] or None,
        "error": codec.loads(info["error"] or "null"),
        "total": len(codec.loads(info["plan"] or "[]")),
    }
    for move in moves:
        old, new = move.split(">")
        status = {**metadata, "status": new, "previous": old}
        if new == "compensating":
            reason = "failed"
            if old == "compensation_failed":
                reason = "retry"
            elif old == "completed":
                reason = "undo"  # a completed child saga undone for its parent
            elif info["cancel_requested"] == "1":
                reason = "cancelled" if info["intent"] == "cancelled" else "deadline"
            status["reason"] = reason
            if reason in ("failed", "deadline"):
                execute(SAGA_FAIL, {}, status)
            execute(SAGA_COMPENSATE, {}, status)
        elif new in CONCLUSIONS:
            execute(CONCLUSIONS[new], {"duration_s": max(at - created, 0)}, status)
        elif new == "needs_attention":
            execute(SAGA_NEEDS_ATTENTION, {}, status)


# -- correlation on everything done for a saga ------------------------------------------


@dataclass(frozen=True)
class SagaScope:
    """The saga that the current thread works for (while a step or errback runs)."""

    saga_id: str
    correlation_id: str
    traceparent: str = ""
    """The saga's W3C trace context (``00-{trace}-{span}-01``), '' if unknown."""


_scope: contextvars.ContextVar[SagaScope | None] = contextvars.ContextVar(
    "sagaline_scope", default=None
)


def current_scope() -> SagaScope | None:
    """The saga the current thread works for, if any (log filters read it)."""
    return _scope.get()


@contextmanager
def scope(saga_id: str, correlation_id: str, traceparent: str = "") -> Iterator[SagaScope]:
    """Work for one saga: log lines and spans within carry its ids."""
    token = enter_scope(saga_id, correlation_id, traceparent)
    try:
        yield SagaScope(saga_id, correlation_id, traceparent)
    finally:
        exit_scope(token)


def enter_scope(saga_id: str, correlation_id: str, traceparent: str = ""
                ) -> contextvars.Token[SagaScope | None]:
    """Start working for one saga, where a ``with`` block cannot span the work (signals)."""
    return _scope.set(SagaScope(saga_id, correlation_id, traceparent))


def exit_scope(token: contextvars.Token[SagaScope | None]) -> None:
    """Stop working for the saga :func:`enter_scope` entered."""
    _scope.reset(token)


# -- the saga's trace context -------------------------------------------------------------


@dataclass(frozen=True)
class TraceContext:
    """A saga's place in a distributed trace, chosen when it starts and recorded with it.

    The saga's own span id is chosen up front, so that every step's span, in whatever
    process, can name it as parent before the saga span itself is emitted (at the end).
    """

    trace_id: str
    """32 hex digits."""
    span_id: str
    """16 hex digits: the saga span's id."""
    parent_id: str = ""
    """16 hex digits: the span the saga was started in, '' if none."""

    @property
    def traceparent(self) -> str:
        """The W3C ``traceparent`` of the saga span."""
        return f"00-{self.trace_id}-{self.span_id}-01"

    @classmethod
    def parse(cls, traceparent: str, parent_id: str = "") -> TraceContext | None:
        """Read a recorded ``traceparent``; ``None`` if it is missing or malformed."""
        parts = traceparent.split("-")
        if len(parts) != 4 or len(parts[1]) != 32 or len(parts[2]) != 16:
            return None
        return cls(parts[1], parts[2], parent_id)

    @classmethod
    def new(cls) -> TraceContext:
        """A context for a saga starting now: within the caller's current span, if any."""
        current = otel_trace.get_current_span().get_span_context()
        span_id = secrets.token_hex(8)
        if current.is_valid:
            return cls(f"{current.trace_id:032x}", span_id, f"{current.span_id:016x}")
        return cls(secrets.token_hex(16), span_id)


__all__ = [
    "EVENTS", "Event", "Handler", "OperationSpan", "SagaScope", "TraceContext",
    "announce_moves", "attach", "attached", "current_scope", "detach", "enter_scope",
    "execute", "exit_scope", "scope",
]
