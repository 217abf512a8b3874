"""The heartbeat: renews a running attempt's lease while its function works."""

from __future__ import annotations

import logging
import threading
from types import TracebackType

import redis

from .status import Role
from .store import RedisStore

log = logging.getLogger("sagaline.heartbeat")


class Heartbeat:
    """Renews one attempt's lease every ``lease_s / 3`` seconds, in a daemon thread.

    Use as a context manager around the call. :attr:`lost` is set when another attempt
    took the lease over (or the operation ended elsewhere); :attr:`cancel_requested` when
    the saga was cancelled. Either tells a cooperative action to stop.
    """

    def __init__(self, store: RedisStore, saga_id: str, role: Role, step: str, attempt: int,
                 lease_s: float) -> None:
        """Prepare the heartbeat of one attempt; it starts on ``__enter__``."""
        self.store = store
        self.saga_id, self.role, self.step, self.attempt = saga_id, role, step, attempt
        self.lease_s = lease_s
        self.lost = threading.Event()
        self.cancel_requested = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True,
                                        name=f"sagaline-heartbeat-{step}")

    def __enter__(self) -> Heartbeat:
        """Start renewing."""
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        """Stop renewing (the outcome's record ends the lease)."""
        self._stop.set()

    def should_stop(self) -> bool:
        """Whether the attempt should stop: its lease was lost or its saga cancelled."""
        if self.lost.is_set() or self.cancel_requested.is_set():
            return True
        try:
            return self.store.is_cancel_requested(self.saga_id)
        except redis.RedisError:
            return False

    def _beat(self) -> None:
        while not self._stop.wait(self.lease_s / 3):
            try:
                held, cancelled = self.store.renew(self.saga_id, self.role, self.step,
                                                   attempt=self.attempt, lease_s=self.lease_s)
            except redis.RedisError as error:
                log.warning("[saga %s] lease renewal of %s failed: %s", self.saga_id,
                            self.step, error)
                continue
            if cancelled:
                self.cancel_requested.set()
            if not held:
                self.lost.set()
                return
