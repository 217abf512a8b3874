"""Signals in the store: keeping what the outside world sends, and steps that wait for it.

A signal is kept on the saga's own hash (so it expires with the run): each distinct payload
of a name once, in arrival order, whether or not a step waits for it yet, so a signal sent
before the saga reaches its step is not lost, and the same signal sent twice is kept once.
A step that waits records it in the same script that checks no signal came meanwhile
(``signal.lua``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, cast

import redis

from sagaline import codec
from sagaline.status import Role

SignalOutcome = Literal["delivered", "kept", "duplicate"]
"""What became of a signal sent: it woke a waiting step; it was kept for a step that
waits later (or for the waiting step to read when it runs next); it was received before."""


@dataclass(frozen=True)
class Sent:
    """What ``signal.lua`` answered to a signal sent."""

    outcome: str
    """``delivered``, ``kept``, ``duplicate``; or, when it was refused, ``missing`` (no
    such saga), ``inactive`` (the saga does not run), ``full`` (too many of this name)."""
    count: int = 0
    """How many distinct signals of this name the saga has kept, this one included."""
    woken: tuple[str, ...] = ()
    """The steps it woke: the caller sends each again."""
    status: str = ""
    """The saga's status, when it was ``inactive``."""


@dataclass(frozen=True)
class Parked:
    """What ``signal.lua`` answered to an attempt that waits for a signal."""

    outcome: Literal["ok", "wake", "timeout", "stopped", "stale"]
    """``ok`` (it waits); ``wake`` (a signal came meanwhile: send it again now);
    ``timeout`` (its deadline passed); ``stopped`` (the saga no longer runs); ``stale``
    (the attempt lost its claim)."""
    deadline: float = 0.0
    """Until when it waits (epoch seconds, the server's clock)."""
    first: bool = False
    """Whether this wait set the deadline (the step's first wait)."""


class SignalRecords:
    """The store's signal operations (a base of :class:`~sagaline.store.RedisStore`)."""

    client: redis.Redis
    """A redis-py client with ``decode_responses=True``."""
    _call: Callable[..., Any]
    """Runs one of the store's scripts for one saga (:class:`~sagaline.store.RedisStore`)."""
    saga_keys: Callable[[str], list[str]]
    """The saga hash, step hash and log keys of one run (:class:`~sagaline.store.SagaRecords`)."""

    def send_signal(self, saga_id: str, name: str, payload: dict[str, Any], *,
                    max_kept: int) -> Sent:
        """Keep a signal for a running saga and wake the steps that wait for it.

        ``payload`` is kept as canonical JSON (sorted keys), so the same payload sent twice
        is recognised whatever its key order.
        """
        reply = [str(x) for x in self._call("signal", saga_id, "send", name,
                                            codec.canonical(payload), max_kept)]
        kind = reply[0]
        if kind in ("delivered", "kept"):
            return Sent(kind, int(reply[1]), tuple(reply[2:]))
        if kind == "inactive":
            return Sent(kind, status=reply[1])
        if kind == "full":
            return Sent(kind, int(reply[1]))
        return Sent(kind)

    def wait_for_signal(self, saga_id: str, role: Role, step: str, *, attempt: int,
                        name: str, timeout_s: float, seen: int) -> Parked:
        """Let the claimed attempt wait for signal ``name``, holding no worker or lease.

        ``seen`` is how many signals of the name the attempt read; if more came since, it
        does not wait (``wake``). The deadline is set by the step's first wait.
        """
        reply = [str(x) for x in self._call("signal", saga_id, "wait", role.value, step,
                                            attempt, name, f"{timeout_s:.6f}", seen)]
        outcome = reply[0]
        if outcome == "ok":
            return Parked("ok", float(reply[1]), reply[2] == "1")
        if outcome == "timeout":
            return Parked("timeout", float(reply[1]))
        if outcome == "wake":
            return Parked("wake")
        if outcome == "stopped":
            return Parked("stopped")
        return Parked("stale")

    def signals(self, saga_id: str, name: str) -> list[dict[str, Any]]:
        """The distinct payloads of signal ``name`` the saga received, oldest first."""
        raw = cast(str | None, self.client.hget(self.saga_keys(saga_id)[0],
                                                f"signal:{name}")) or ""
        return [codec.loads(line) for line in raw.split("\n") if line]
