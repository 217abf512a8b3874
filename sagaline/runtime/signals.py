"""Signals: a saga that waits for the outside world (an approval, a webhook).

An action calls :meth:`StepContext.wait_for <sagaline.StepContext.wait_for>` when what it
needs has not come yet. Its attempt then waits in the record (``signal.lua``), holding no
worker and no lease, and its chain stops there. Three things send the step's message
again, each from the step, with the chain after it:

1. A signal of that name (:meth:`Signals.send`, from ``engine.signal``, ``sagaline
   signal`` or ``POST /sagas/{id}/signals/{name}``) wakes it; it runs again and reads
   what came (:meth:`StepContext.signals <sagaline.StepContext.signals>`).
2. A signal that came while it ran (after its last read) makes it run again at once, so
   none is missed between the read and the wait.
3. Its deadline (set by its first wait): a delayed message sent at the first wait, and the
   recovery sweep as a backstop, run it once more; if it waits again, it fails with a
   :class:`~sagaline.errors.SignalTimeoutError` and the saga falls back or rolls back.

A signal sent before the saga reaches the step is kept on the saga's record; the same
payload sent twice is kept once.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any, NoReturn

from sagaline import codec
from sagaline.context import WaitForSignal, signal_name
from sagaline.errors import (
    InvalidSignalError,
    SagaCancelledError,
    SagaNotFoundError,
    SignalTimeoutError,
    StateError,
)
from sagaline.outcome import SignalReceipt
from sagaline.runtime.driver import Driver
from sagaline.runtime.message import Ending, Envelope, Skip
from sagaline.runtime.operation import Plan
from sagaline.store.redis import RedisStore
from sagaline.store.replies import Claim

log = logging.getLogger("sagaline.signals")

#: The largest signal payload kept, as canonical JSON.
MAX_PAYLOAD_BYTES = 64 * 1024
#: The most distinct signals of one name one saga keeps.
MAX_KEPT = 1000
#: How long after its deadline the delayed message comes (so the deadline has passed).
_DEADLINE_MARGIN_S = 0.05


class Signals:
    """Sends signals to sagas, and lets actions wait for them."""

    def __init__(self, store: RedisStore, driver: Driver) -> None:
        """Keep signals in ``store``; send woken steps again through ``driver``."""
        self.store = store
        self.driver = driver

    def send(self, saga_id: str, name: str, payload: dict[str, Any] | None = None
             ) -> SignalReceipt:
        """Send signal ``name`` with ``payload`` (a JSON object) to a running saga.

        It is kept on the saga's record and wakes the steps that wait for it. Sending the
        same payload again is harmless (``duplicate``).

        Raises:
            InvalidSignalError: The name or payload is not valid; nothing was kept.
            SagaNotFoundError: No such saga is recorded.
            StateError: The saga does not run any more (or kept too many of this name).
        """
        body = _checked(saga_id, name, payload)
        sent = self.store.send_signal(saga_id, name, body, max_kept=MAX_KEPT)
        if sent.outcome == "missing":
            raise SagaNotFoundError(f"no saga {saga_id!r} is recorded (it may have expired)")
        if sent.outcome == "inactive":
            raise StateError(f"saga {saga_id} is {sent.status}: only a running saga takes "
                             f"signals; signal {name!r} was not kept")
        if sent.outcome == "full":
            raise StateError(f"saga {saga_id} keeps {sent.count} distinct {name!r} signals "
                             "already, the most it keeps; this one was not kept")
        if sent.woken:
            saga = self.driver.saga_of(saga_id)
            for step in sent.woken:
                try:
                    self.driver.resend(saga, saga_id, step)
                except Exception as error:  # the record says queued: the sweep re-sends it
                    log.warning("[saga %s] %s woken by signal %r, but not sent (%s); the "
                                "recovery sweep sends it", saga_id, step, name, error)
        log.info("[saga %s] signal %r %s%s", saga_id, name, sent.outcome,
                 f" (woke {', '.join(sent.woken)})" if sent.woken else "")
        return SignalReceipt(saga_id=saga_id, signal=name, outcome=sent.outcome,
                             received=sent.count, woken=list(sent.woken))

    def park(self, envelope: Envelope, plan: Plan, claim: Claim, wait: WaitForSignal
             ) -> Exception:
        """Let a claimed attempt that asked to wait go without holding the worker.

        Raises :class:`~sagaline.runtime.message.Skip` when it waits (or runs again at
        once); returns the error to fail the attempt with when it may not wait: its
        deadline passed (:class:`~sagaline.errors.SignalTimeoutError`) or its saga stopped.
        """
        saga_id, step = envelope.saga_id, plan.step.name
        parked = self.store.wait_for_signal(
            saga_id, envelope.role, step, attempt=claim.attempt, name=wait.name,
            timeout_s=wait.timeout_s, seen=wait.seen)
        if parked.outcome == "ok":
            if parked.first:
                # Its last run at the deadline, unless a signal completes it first.
                delay = max(0.0, parked.deadline - time.time()) + _DEADLINE_MARGIN_S
                self.driver.resend(plan.saga, saga_id, step, countdown=delay)
            self._waits(f"{step} waits for signal {wait.name!r} until "
                        f"{_iso(parked.deadline)}")
        if parked.outcome == "wake":
            self.driver.resend(plan.saga, saga_id, step)
            self._waits(f"{step}: signal {wait.name!r} came while it ran; it runs again")
        if parked.outcome == "stale":
            raise Skip(f"{step} attempt {claim.attempt} lost its claim before it could wait",
                       ending=Ending.DROPPED)
        if parked.outcome == "stopped":
            return SagaCancelledError(
                f"saga {saga_id} stopped while {step} was to wait for signal {wait.name!r}",
                saga_id=saga_id, step=step)
        received = len(self.store.signals(saga_id, wait.name))
        because = f": {wait.reason}" if wait.reason else ""
        return SignalTimeoutError(
            f"{step} waited for signal {wait.name!r} until {_iso(parked.deadline)} and it "
            f"did not get what it needs ({received} received){because}",
            saga_id=saga_id, step=step,
            details={"signal": wait.name, "deadline": _iso(parked.deadline),
                     "received": received, "reason": wait.reason})

    @staticmethod
    def _waits(reason: str) -> NoReturn:
        raise Skip(reason, ending=Ending.SUCCEEDED)


def _checked(saga_id: str, name: str, payload: dict[str, Any] | None) -> dict[str, Any]:
    """The payload to keep; raises :class:`InvalidSignalError` naming the field at fault."""
    try:
        signal_name(name)
    except ValueError as error:
        raise InvalidSignalError(saga_id, name, [{"field": "name", "problem": str(error)}]
                                 ) from None
    body = {} if payload is None else payload
    if not isinstance(body, dict):
        raise InvalidSignalError(saga_id, name, [{
            "field": "payload", "problem": f"must be a JSON object, not {type(body).__name__}"}])
    try:
        size = len(codec.canonical(body).encode())
    except (TypeError, ValueError) as error:
        raise InvalidSignalError(saga_id, name, [{
            "field": "payload", "problem": f"must be JSON: {error}"}]) from None
    if size > MAX_PAYLOAD_BYTES:
        raise InvalidSignalError(saga_id, name, [{
            "field": "payload",
            "problem": f"is {size} bytes as JSON; at most {MAX_PAYLOAD_BYTES} are kept"}])
    return body


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="seconds")
