"""What an action or compensation knows about the saga run it works for."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, NoReturn

from sagaline import codec
from sagaline.errors import InvalidEventError, SagaCancelledError, StateError
from sagaline.naming import name_problems
from sagaline.status import Role

#: The header names under which outside calls carry the flow's ids.
CORRELATION_HEADER = "X-Correlation-ID"
CAUSATION_HEADER = "X-Causation-ID"


#: What a signal's name may be: a letter, then letters, digits, ``_ . -``; 64 at most.
SIGNAL_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.\-]{0,63}")


def _never() -> bool:
    return False


def _no_signals(name: str) -> list[dict[str, Any]]:
    return []


class WaitForSignal(BaseException):
    """Signal: this action waits for signal ``name``; the runtime lets the worker go.

    Raised by :meth:`StepContext.wait_for`. It derives from :class:`BaseException` so that
    an action's ``except Exception`` does not swallow it.
    """

    def __init__(self, name: str, timeout_s: float, seen: int, reason: str) -> None:
        self.name = name
        self.timeout_s = timeout_s
        self.seen = seen
        self.reason = reason
        super().__init__(f"waits for signal {name!r}")


def _no_sink(report: dict[str, Any]) -> None:
    return None


def _convention_only(name: str, payload: dict[str, Any]) -> list[str]:
    return name_problems(name)


@dataclass(frozen=True)
class StepContext:
    """Passed as the first argument to every action and compensation.

    Pass ``idempotency_key`` to outside systems (a payment provider, a mailer) and key your
    own writes with it: Celery delivers at least once, so the same attempt may arrive twice,
    and the key is the same for every attempt and every delivery of this operation.

    A long action should call :meth:`raise_if_cancelled` between units of work (an epoch, a
    batch): when the saga is cancelled, or passes its deadline, or this attempt lost its
    lease, it stops there, and whatever it completed is compensated.
    """

    saga_id: str
    """The saga run's id."""
    saga_name: str
    """The saga's declared name."""
    step: str
    """The step's name."""
    role: Role
    """Whether this is the step's action or its compensation."""
    attempt: int
    """Which attempt this is, from 1."""
    correlation_id: str
    """The id shared by everything done for one business flow."""
    cancel_check: Callable[[], bool] = field(default=_never, repr=False, compare=False)
    """Answers whether this attempt should stop; use :meth:`cancelled`."""
    causation_id: str | None = None
    """The id of the event that started this attempt (its ``saga.step.started``)."""
    source: str = ""
    """The task name that runs this operation: the ``source`` of the events it emits."""
    event_check: Callable[[str, dict[str, Any]], list[str]] = field(
        default=_convention_only, repr=False, compare=False)
    """Says what is wrong with an event before it is emitted (the engine's taxonomy)."""
    emitted: list[dict[str, Any]] = field(default_factory=list, repr=False, compare=False)
    """Events emitted so far by this attempt; published only if the attempt is recorded."""
    undoes_fallback: bool = False
    """Whether this compensation undoes the step's fallback (rather than its action)."""
    progress_sink: Callable[[dict[str, Any]], None] = field(
        default=_no_sink, repr=False, compare=False)
    """Where :meth:`progress` reports go (the saga's record, telemetry, Flower)."""
    signal_reader: Callable[[str], list[dict[str, Any]]] = field(
        default=_no_signals, repr=False, compare=False)
    """Reads the signals of one name the saga received (the saga's record)."""
    seen: dict[str, int] = field(default_factory=dict, repr=False, compare=False)
    """How many signals of each name :meth:`signals` returned last."""

    @property
    def idempotency_key(self) -> str:
        """A key stable across attempts and redeliveries of this step's action (or undo)."""
        return f"{self.saga_id}:{self.step}:{self.role.value}"

    @property
    def action_key(self) -> str:
        """The idempotency key of what this compensation undoes.

        That is the step's action, or its fallback when that is what completed; a
        compensation uses it to find what its action did.
        """
        done = Role.FALLBACK if self.undoes_fallback else Role.ACTION
        return f"{self.saga_id}:{self.step}:{done.value}"

    def emit(self, name: str, payload: dict[str, Any] | None = None) -> None:
        """Emit a domain event (``orders.order.created``) for this flow.

        The event carries the saga's correlation id and names this attempt's start as its
        cause. It is recorded with the operation's result in one atomic step and published
        after: an attempt that fails or is superseded publishes nothing, and a bus that is
        down delays the event but never loses it or fails the saga.

        Raises:
            InvalidEventError: The name breaks the convention or is not in the taxonomy,
                or the payload does not match its schema.
        """
        body = codec.jsonable(payload or {})
        problems = self.event_check(name, body)
        if problems:
            raise InvalidEventError(f"step {self.step} cannot emit {name!r}: "
                                    + "; ".join(problems))
        self.emitted.append({"name": name, "payload": body, "source": self.source})

    def outgoing_headers(self) -> dict[str, str]:
        """Headers for outside calls, so the other side can join its work to this flow."""
        headers = {CORRELATION_HEADER: self.correlation_id}
        if self.causation_id:
            headers[CAUSATION_HEADER] = self.causation_id
        return headers

    def progress(self, done: float, total: float | None = None, **metrics: Any) -> None:
        """Report how far this attempt is: ``done`` of ``total`` units, and any metrics.

        The saga's record keeps the latest report (``engine.get``, ``sagaline status``);
        telemetry gets a ``[sagaline, step, progress]`` event and Flower shows the Celery
        task in state PROGRESS with the report in its ``result`` field. Cheap enough for
        every epoch or every second: one write. It never fails the step: a report that
        cannot be recorded is logged and dropped.

        Raises:
            ValueError: ``done`` or ``total`` is not a finite number (``done`` >= 0,
                ``total`` > 0), or a metric is not JSON.
        """
        for name, value in (("done", done), ("total", total)):
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or (
                    value != value or value in (float("inf"), float("-inf"))):
                raise ValueError(f"progress {name} must be a finite number, not {value!r}")
        if done < 0 or (total is not None and total <= 0):
            raise ValueError(f"progress needs done >= 0 and total > 0, not {done!r} of "
                             f"{total!r}")
        try:
            plain = codec.jsonable(metrics)
        except (TypeError, ValueError) as error:
            raise ValueError(f"progress metrics must be JSON values: {error}") from error
        report = {"done": done, "total": total, "metrics": plain, "attempt": self.attempt}
        self.progress_sink(report)

    def signals(self, name: str) -> list[dict[str, Any]]:
        """The payloads of signal ``name`` the saga received so far, oldest first.

        Each distinct payload once: a signal sent twice is kept once. Signals sent before
        the saga reached this step are here too.
        """
        received = self.signal_reader(signal_name(name))
        self.seen[name] = len(received)
        return received

    def wait_for(self, name: str, *, timeout: float | timedelta, reason: str = ""
                 ) -> NoReturn:
        """Stop here and wait for a new signal ``name``, without holding a worker.

        The action runs again from its start when a signal of that name comes that it has
        not read (:meth:`signals`), so it must be idempotent up to here (as every action
        is: delivery is at least once). ``timeout`` counts from the step's first wait, not
        from each; once it passes, the action runs once more and, if it waits again, fails
        with a :class:`~sagaline.errors.SignalTimeoutError` (which ``reason`` explains),
        and the saga falls back or rolls back as for any failure. While it waits, a cancel
        stops the saga at once: nothing of this step is undone.

        Raises:
            StateError: Called from a compensation or a fallback (only actions wait).
            ValueError: ``name`` is not a signal name, or ``timeout`` is not positive.
        """
        if self.role is not Role.ACTION:
            raise StateError(f"{self.role.value} of {self.step} cannot wait for a signal; "
                             "only a step's action can")
        seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or \
                not 0 < seconds < float("inf"):
            raise ValueError(f"signal timeout must be a positive duration, not {timeout!r}")
        name = signal_name(name)
        seen = self.seen[name] if name in self.seen else len(self.signals(name))
        raise WaitForSignal(name, float(seconds), seen, reason)

    def signal(self, name: str, *, timeout: float | timedelta, reason: str = ""
               ) -> dict[str, Any]:
        """The payload of the first signal ``name`` received, or wait for one (:meth:`wait_for`)."""
        received = self.signals(name)
        if received:
            return received[0]
        self.wait_for(name, timeout=timeout, reason=reason)

    def cancelled(self) -> bool:
        """Whether this attempt should stop (the saga was cancelled or its lease lost)."""
        return self.cancel_check()

    def raise_if_cancelled(self) -> None:
        """Stop here if :meth:`cancelled`.

        Raises:
            SagaCancelledError: The attempt should stop.
        """
        if self.cancelled():
            raise SagaCancelledError(
                f"saga {self.saga_id} was cancelled (or lost its lease) during {self.step}"
            )


def signal_name(name: str) -> str:
    """``name`` if it is a signal name; raises :class:`ValueError` saying what one is."""
    if not isinstance(name, str) or not SIGNAL_NAME.fullmatch(name):
        raise ValueError(f"signal name must be a letter then up to 63 letters, digits, "
                         f"'_', '.' or '-', not {name!r}")
    return name
