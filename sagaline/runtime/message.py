"""What travels between the runtime and its transport: messages, signals and the port.

The runtime decides what runs next; a :class:`Transport` only carries it. A step message
carries an :class:`Envelope` of ids (arguments are read from Redis) and the saga's
headers; the runtime answers a delivery with a result, or with one of two signals,
:class:`RetryIn` and :class:`Skip`, that the transport turns into its own retry and drop. A
dropped message's task still ends, as its :class:`Ending` says (Flower shows it so).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from sagaline.saga import Saga
from sagaline.status import Role

#: The task headers every step message carries (prefixed: Celery's request has a
#: ``correlation_id`` of its own, the task id).
SAGA_ID_HEADER = "sagaline_saga_id"
CORRELATION_HEADER = "sagaline_correlation_id"
TRACE_HEADER = "sagaline_traceparent"
#: The W3C header: the saga span, as the parent of the task's spans; an instrumented
#: publisher replaces it with its own span (which is in the saga's trace but for a sweep's).
W3C_TRACE_HEADER = "traceparent"


class RetryIn(Exception):  # noqa: N818 - a control signal, not an error
    """Signal: send this message again after ``delay_s`` seconds."""

    def __init__(self, delay_s: float, cause: BaseException | None = None) -> None:
        self.delay_s = delay_s
        self.cause = cause
        super().__init__(f"retry in {delay_s:.3f} s")


class Ending(str, Enum):
    """How the task of a message the runtime dropped (:class:`Skip`) ends.

    The transport ends the task so (Celery: the event Flower shows): a dropped message
    must still say what became of it, never look as if it ran for ever.
    """

    #: The operation completed, in this delivery or before it (a duplicate dropped), or
    #: this message did its part (it started a child saga, whose end the step follows).
    SUCCEEDED = "succeeded"
    #: The operation gave up: its fallback takes over, or it failed after its saga stopped.
    FAILED = "failed"
    #: It ran nothing that counts: the saga no longer runs this operation (it stopped,
    #: ended or expired), or another attempt took the claim over. Weakest of the three: a
    #: monitor keeps the outcome another delivery of the operation showed.
    DROPPED = "dropped"


class Skip(Exception):  # noqa: N818 - a control signal, not an error
    """Signal: drop this message without continuing the chain; its task ends as ``ending``.

    Args:
        reason: What happened, for the log and the monitor.
        ending: How the message's task ends (by default: dropped, the weakest).
        error: What made the operation give up (with :attr:`Ending.FAILED`).
    """

    def __init__(self, reason: str, *, ending: Ending = Ending.DROPPED,
                 error: BaseException | None = None) -> None:
        self.ending = ending
        self.error = error
        super().__init__(reason)


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

    def task_id(self, has_fallback: bool) -> str:
        """The message's task id: the same operation always gets the same id.

        ``{saga}-{step}`` for an action, ``-fallback`` for a fallback (or the compensation
        that undoes one), ``-undo`` for a compensation; a revoke names these ids.
        """
        suffix = "-undo" if self.role is Role.COMPENSATION else ""
        if (self.role is Role.FALLBACK or self.undoes_fallback) and has_fallback:
            suffix = "-fallback" + suffix
        return f"{self.saga_id}-{self.step}{suffix}"


def headers_for(saga_id: str, correlation_id: str, traceparent: str) -> dict[str, str]:
    """The task headers of a saga's messages."""
    headers = {SAGA_ID_HEADER: saga_id, CORRELATION_HEADER: correlation_id,
               TRACE_HEADER: traceparent}
    if traceparent:
        headers[W3C_TRACE_HEADER] = traceparent
    return headers


def forward_task_ids(saga: Saga, saga_id: str, start_at: int = 0) -> list[str]:
    """The task ids of the forward messages from step ``start_at`` on (to revoke them)."""
    ids = [Envelope(saga_id, saga.name, s.name, Role.ACTION).task_id(False)
           for s in saga.steps[start_at:]]
    return ids + [Envelope(saga_id, saga.name, s.name, Role.FALLBACK).task_id(True)
                  for s in saga.steps if s.fallback]


class Transport(Protocol):
    """What the runtime needs from a transport: carry messages, and take queued ones back.

    The runtime has decided what runs; a transport builds and sends the messages. Each
    message, when delivered, goes to :meth:`Runtime.execute
    <sagaline.runtime.attempt.Runtime.execute>`; an action that fails for good goes to
    :meth:`Driver.step_failed <sagaline.runtime.driver.Driver.step_failed>`, a
    compensation that fails for good to :meth:`Driver.compensation_failed
    <sagaline.runtime.driver.Driver.compensation_failed>`.
    """

    def send_chain(self, saga: Saga, saga_id: str, steps: Sequence[str],
                   headers: Mapping[str, str], *, countdown: float | None = None) -> None:
        """Send the actions of ``steps`` as one chain: each runs when the one before ends.

        With ``countdown``, the first runs no sooner than that many seconds from now.
        """

    def send(self, saga: Saga, saga_id: str, steps: Sequence[str], role: Role, *,
             headers: Mapping[str, str], undoes_fallback: bool = False,
             countdown: float | None = None) -> None:
        """Send one message per step for ``role``, each on its own.

        These are a group's branches, a fallback, or compensations; with ``countdown``,
        each runs no sooner than that many seconds from now.
        """

    def revoke(self, task_ids: Sequence[str]) -> None:
        """Take back queued messages by task id (running ones are left to end)."""
