"""The engine's lifecycle events, derived from a saga's transition log.

Every transition script appends an entry to the saga's log in the same atomic step that
changes its state, so the log is the saga's outbox: an event derived from it can be
published late (the bus was down) but is never lost, and never published for a transition
that did not happen. This module turns log entries into :class:`Event` objects, the same
way every time: an entry's event id is derived from the saga id and the entry's position,
so a second publication carries the same id.

Causation, so that "why did this run?" always has an answer:

1. ``saga.started`` names what triggered the run (the causation id given to ``start``, or
   the id of the start command when none was given).
2. A step's events name ``saga.started``; an event a step emitted names the step's
   ``saga.step.started``.
3. ``saga.failed`` names the ``saga.step.failed`` that caused it; ``saga.completed`` the
   last ``saga.step.completed``.
4. Compensations, and the run's final ``saga.compensated`` / ``saga.compensation_failed``
   / ``saga.cancelled``, name the failure (``saga.failed``) or the cancellation
   (``saga.cancellation_requested``) that started the rollback.
5. Every event of a run, lifecycle or emitted, carries the run's trigger in
   ``meta["trigger_id"]``: the causation id given to ``start`` (Thunderline's audit found
   its saga events without one).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sagaline import codec
from sagaline.events.canonical import Event
from sagaline.ids import derived_id
from sagaline.naming import event_name

SOURCE = "sagaline"
"""The ``source`` of the engine's own events."""

#: Log entry kinds and the lifecycle event each is published as.
LIFECYCLE_NAMES: Mapping[str, str] = {
    "saga.started": event_name("saga.started"),
    "saga.completed": event_name("saga.completed"),
    "saga.failed": event_name("saga.failed"),
    "saga.compensated": event_name("saga.compensated"),
    "saga.compensation_failed": event_name("saga.compensation_failed"),
    "saga.cancelled": event_name("saga.cancelled"),
    "saga.cancelling": event_name("saga.cancellation_requested"),
    "saga.recovering": event_name("saga.recovery_attempted"),
    "saga.compensation_retried": event_name("saga.compensation_retried"),
    "action.started": event_name("saga.step.started"),
    "action.completed": event_name("saga.step.completed"),
    "action.retrying": event_name("saga.step.retry_scheduled"),
    "action.failed": event_name("saga.step.failed"),
    "compensation.started": event_name("saga.compensation.started"),
    "compensation.completed": event_name("saga.compensation.completed"),
    "compensation.retrying": event_name("saga.compensation.retry_scheduled"),
    "compensation.failed": event_name("saga.compensation.failed"),
    "compensation.skipped": event_name("saga.compensation.skipped"),
    "compensation.due": event_name("saga.compensation.scheduled"),
    "compensation.waiting": event_name("saga.compensation.suspended"),
    "action.queued": event_name("saga.step.queued"),
    "action.waiting": event_name("saga.step.suspended"),
    "fallback.due": event_name("saga.fallback.scheduled"),
    "fallback.started": event_name("saga.fallback.started"),
    "fallback.completed": event_name("saga.fallback.completed"),
    "fallback.retrying": event_name("saga.fallback.retry_scheduled"),
    "fallback.failed": event_name("saga.fallback.failed"),
    "group.completed": event_name("saga.group.completed"),
    "saga.needs_attention": event_name("saga.attention_requested"),
    "saga.steps_added": event_name("saga.steps_added"),
    "saga.undoing": event_name("saga.undo_requested"),
    "saga.resumed": event_name("saga.resumed"),
}

#: The log entry kind of an event a step emitted (``ctx.emit``).
EMITTED = "emit"

_ROLLBACK_CAUSES = {"saga.failed", "saga.cancelling", "saga.undoing"}
_ROLLBACK_EVENTS = {"saga.compensated", "saga.compensation_failed", "saga.cancelled",
                    "saga.compensation_retried"}
_PAYLOAD_KEYS = ("step", "attempt", "error", "reason", "retry_in_s", "undone", "steps",
                 "waiting_on", "recovery", "group", "child", "plan", "pivot", "via", "signal",
                 "until_at")


@dataclass(frozen=True)
class LoggedEvent:
    """An event derived from the log entry at ``index``."""

    index: int
    """The entry's position in the log, from 0."""
    event: Event
    """The event."""
    lifecycle: bool
    """Whether it is one of the engine's lifecycle events (else a step emitted it)."""


def _payload(raw: Any) -> dict[str, Any]:
    """An emitted event's logged payload.

    It is JSON text (as the store logs it), or a mapping (as logs written before did).
    """
    value = codec.loads(raw) if isinstance(raw, str) else raw
    return dict(value) if isinstance(value, dict) else {}


def derive_events(saga_id: str, saga: Mapping[str, str], entries: Sequence[str],
                  start: int = 0) -> list[LoggedEvent]:
    """The events a saga's log entries stand for, in log order, from entry ``start`` on.

    Args:
        saga_id: The run's id.
        saga: The run's hash (name, correlation_id, causation_id).
        entries: The log's raw JSON entries, from the first (earlier entries are read for
            the ids later events name as their cause).
        start: The first entry whose event is wanted.
    """
    derivation = _Derivation(saga_id, saga)
    events = []
    for index, raw in enumerate(entries):
        logged = derivation.derive(index, codec.loads(raw), build=index >= start)
        if logged is not None:
            events.append(logged)
    return events


class _Derivation:
    """Walks a log in order, remembering what later events name as their cause."""

    def __init__(self, saga_id: str, saga: Mapping[str, str]) -> None:
        self.saga_id = saga_id
        self.name = saga.get("name", "")
        self.correlation_id = saga.get("correlation_id", "")
        self.trigger = saga.get("causation_id") or None
        self.started: str | None = None
        self.rollback_cause: str | None = None
        self.step_started: dict[str, str] = {}
        self.step_failed: dict[str, str] = {}
        self.last_completed: str | None = None

    def derive(self, index: int, entry: dict[str, Any], *, build: bool = True
               ) -> LoggedEvent | None:
        kind = str(entry.get("event", ""))
        name = LIFECYCLE_NAMES.get(kind)
        if name is None and kind != EMITTED:
            return None
        at = float(entry.get("at", 0.0))
        event_id = derived_id(at, self.saga_id, str(index))
        step = entry.get("step")
        if kind == EMITTED:
            return self._emitted(index, entry, event_id, at) if build else None
        assert name is not None
        cause = self._cause(kind, step)
        self._remember(kind, step, event_id)
        if not build:
            return None
        payload = {"saga": self.name, "saga_id": self.saga_id}
        payload.update({k: entry[k] for k in _PAYLOAD_KEYS if entry.get(k) is not None})
        # Built from the engine's own records, with ids and names made right above: no
        # validation needed (it would cost more than the rest of the relay's work).
        event = Event.model_construct(
            id=event_id, name=name, domain=name.split(".", 1)[0], source=SOURCE,
            correlation_id=self.correlation_id, causation_id=cause, payload=payload,
            meta=self._meta(log_index=index),
            occurred_at=datetime.fromtimestamp(at, tz=UTC),
        )
        return LoggedEvent(index, event, lifecycle=True)

    def _meta(self, **more: Any) -> dict[str, Any]:
        """What every event of the run carries: the saga, and what triggered the run.

        ``trigger_id`` is the causation id the run was started with, so an event deep in
        the flow still answers "why did this saga run?" without walking the chain.
        """
        meta: dict[str, Any] = {"saga": self.name, "saga_id": self.saga_id}
        if self.trigger:
            meta["trigger_id"] = self.trigger
        meta.update(more)
        return meta

    def _cause(self, kind: str, step: Any) -> str | None:
        if kind == "saga.started":
            return self.trigger
        if kind in ("saga.failed", "saga.needs_attention") and step in self.step_failed:
            return self.step_failed[step]
        if kind == "saga.completed":
            return self.last_completed or self.started
        if (kind.startswith("compensation.") or kind in _ROLLBACK_EVENTS) and self.rollback_cause:
            return self.rollback_cause
        return self.started

    def _remember(self, kind: str, step: Any, event_id: str) -> None:
        if kind == "saga.started":
            self.started = event_id
        elif kind in _ROLLBACK_CAUSES:
            self.rollback_cause = event_id
        elif kind == "action.started" and step:
            self.step_started[str(step)] = event_id
        elif kind in ("action.failed", "fallback.failed") and step:
            self.step_failed[str(step)] = event_id
        elif kind == "action.completed":
            self.last_completed = event_id

    def _emitted(self, index: int, entry: dict[str, Any], event_id: str, at: float
                 ) -> LoggedEvent | None:
        name = str(entry.get("name", ""))
        step = str(entry.get("step", ""))
        role = str(entry.get("role", "action"))
        cause = self.step_started.get(step) if role == "action" else self.rollback_cause
        try:
            event = Event(
                id=event_id, name=name, domain=name.split(".", 1)[0],
                source=str(entry.get("source") or f"{self.name}.{step}"),
                correlation_id=self.correlation_id, causation_id=cause or self.started,
                payload=_payload(entry.get("payload")),
                meta=self._meta(step=step, role=role, log_index=index),
                occurred_at=datetime.fromtimestamp(at, tz=UTC),
            )
        except ValueError:
            return None
        return LoggedEvent(index, event, lifecycle=False)
