"""The heartbeat: renews running attempts' leases while their functions work.

One daemon thread per process renews every attempt that process runs, each every third of
its lease, so starting a step costs a dictionary entry, not a thread.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from types import TracebackType

import redis

from sagaline.status import Role
from sagaline.store.redis import RedisStore

log = logging.getLogger("sagaline.heartbeat")


class Heartbeat:
    """The lease of one running attempt, renewed while it is registered.

    Use as a context manager around the call. :attr:`lost` is set when another attempt took
    the lease over (or the operation ended elsewhere); :attr:`cancel_requested` when the
    saga was cancelled. Either tells a cooperative action to stop.
    """

    def __init__(self, store: RedisStore, saga_id: str, role: Role, step: str, attempt: int,
                 lease_s: float) -> None:
        """Describe the lease of one attempt; renewal starts on ``__enter__``."""
        self.store = store
        self.saga_id, self.role, self.step, self.attempt = saga_id, role, step, attempt
        self.lease_s = lease_s
        self.lost = threading.Event()
        self.cancel_requested = threading.Event()
        self.next_at = 0.0

    def __enter__(self) -> Heartbeat:
        """Start renewing."""
        self.next_at = time.monotonic() + self.lease_s / 3
        _keeper().add(self)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        """Stop renewing (the outcome's record ends the lease)."""
        _keeper().remove(self)

    def should_stop(self) -> bool:
        """Whether the attempt should stop.

        It should when its lease was lost, its saga was cancelled, or (an action) its saga
        is rolling back.
        """
        if self.lost.is_set() or self.cancel_requested.is_set():
            return True
        try:
            return self.store.must_stop(self.saga_id, self.role)
        except redis.RedisError:
            return False

    def renew(self) -> bool:
        """Renew once; ``False`` when the lease is gone for good."""
        try:
            held, cancelled = self.store.renew(self.saga_id, self.role, self.step,
                                               attempt=self.attempt, lease_s=self.lease_s)
        except redis.RedisError as error:
            log.warning("[saga %s] lease renewal of %s failed: %s", self.saga_id, self.step,
                        error)
            return True
        if cancelled:
            self.cancel_requested.set()
        if not held:
            self.lost.set()
        return held


class _Keeper:
    """The process's renewing thread and the attempts it renews."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.beats: set[Heartbeat] = set()
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name="sagaline-heartbeat")
        self.thread.start()

    def add(self, beat: Heartbeat) -> None:
        with self.lock:
            self.beats.add(beat)
        self.wake.set()

    def remove(self, beat: Heartbeat) -> None:
        with self.lock:
            self.beats.discard(beat)

    def _run(self) -> None:
        while True:
            with self.lock:
                beats = list(self.beats)
            now = time.monotonic()
            for beat in beats:
                if beat.next_at <= now:
                    beat.next_at = now + beat.lease_s / 3
                    if not beat.renew():
                        self.remove(beat)
            with self.lock:
                soonest = min((b.next_at for b in self.beats), default=now + 60)
            self.wake.wait(max(0.01, soonest - time.monotonic()))
            self.wake.clear()


_KEEPER: _Keeper | None = None
_KEEPER_LOCK = threading.Lock()


def _keeper() -> _Keeper:
    """The renewing thread of this process (a forked child starts its own)."""
    global _KEEPER
    with _KEEPER_LOCK:
        if _KEEPER is None or _KEEPER.pid != os.getpid():
            _KEEPER = _Keeper()
        return _KEEPER
