"""The outbox relay: publishes a saga's logged transitions to the event bus.

The saga's transition log is its outbox (see :mod:`sagaline.lifecycle`): the scripts that
change a saga's state log the change in the same atomic step and put the saga in
``index:outbox``. The relay publishes what was logged and not yet published, then moves
the saga's published count forward. It runs right after each transition (in the process
that made it), and the recovery sweep runs it for every saga left in the index, so a
publish that fails (the bus is down) is retried until it succeeds. A failed publish never
fails the saga: it is logged and left for the sweep.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import Iterable

import redis

from sagaline.errors import EventError
from sagaline.events.bus import EventBus
from sagaline.events.canonical import Event
from sagaline.events.lifecycle import derive_events
from sagaline.store.redis import RedisStore

log = logging.getLogger("sagaline.outbox")

#: How long one relay may hold a saga's outbox before another may take it over.
LOCK_MS = 10_000
#: How often, and how long apart, a relay asks for a saga's outbox another relay holds.
LOCK_TRIES = 10
LOCK_WAIT_S = 0.02
#: How long the relay thread gathers transitions before it publishes them.
RELAY_LINGER_S = 0.05


class Outbox:
    """Relays logged transitions of sagas to a bus.

    Args:
        store: Where the logs are.
        bus: Where events go; ``None`` publishes nothing (the log is only marked read).
        lifecycle_events: Whether the engine's own lifecycle events are published; events
            the steps emitted are published either way.
    """

    def __init__(self, store: RedisStore, bus: EventBus | None, *,
                 lifecycle_events: bool = True) -> None:
        """Relay from ``store`` to ``bus``."""
        self.store = store
        self.bus = bus
        self.lifecycle_events = lifecycle_events
        self._pid = 0
        self._pending: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def flush(self, saga_id: str, rounds: int = LOCK_TRIES) -> int:
        """Publish what the saga logged and has not published; how many events went out.

        Never raises: a bus or store failure is logged and left for the sweep.
        """
        return self.flush_many([saga_id], rounds)

    def flush_many(self, saga_ids: Iterable[str], rounds: int = LOCK_TRIES) -> int:
        """Publish what these sagas logged and have not published, in three round trips.

        Claim and read every outbox in one, publish every event in another, record what
        was published and release the claims in a third. A saga whose outbox another
        relay holds is asked again shortly. Never raises: a bus or store failure is
        logged and left for the sweep. Returns how many events went out.
        """
        pending = list(dict.fromkeys(saga_ids))
        published = 0
        for _ in range(rounds):
            if not pending:
                break
            try:
                sent, pending = self._publish_round(pending)
            except (redis.RedisError, EventError, OSError) as error:
                log.warning("events of %d saga(s) not published yet (%s); the sweep will "
                            "retry", len(pending), error)
                return published
            published += sent
            if pending:
                time.sleep(LOCK_WAIT_S)
        return published

    def _publish_round(self, saga_ids: list[str]) -> tuple[int, list[str]]:
        """One round; returns the events sent and the sagas to ask again.

        Those are the sagas another relay held, and those that logged more meanwhile.
        """
        token = uuid.uuid4().hex
        claims, busy = self.store.claim_outboxes(saga_ids, token, LOCK_MS)
        events: list[Event] = []
        for saga_id, claim in claims.items():
            events += [
                logged.event
                for logged in derive_events(saga_id, claim.saga, claim.entries,
                                            start=claim.published)
                if self.lifecycle_events or not logged.lifecycle
            ]
        done = {saga_id: claim.published for saga_id, claim in claims.items()}
        try:
            if events and self.bus is not None:
                self.bus.publish(*self._registered(events), history=False)
        except BaseException:
            self.store.mark_published(done, token)  # release the claims only
            raise
        left = self.store.mark_published(
            {saga_id: len(claim.entries) for saga_id, claim in claims.items()}, token)
        sent = len(events) if self.bus is not None else 0
        return sent, busy + [saga_id for saga_id, n in left.items() if n > 0]

    def _registered(self, events: list[Event]) -> list[Event]:
        """The events the bus's taxonomy knows; an unknown one is logged, never blocking."""
        taxonomy = self.bus.taxonomy if self.bus is not None else None
        if taxonomy is None:
            return events
        known = []
        for event in events:
            if event.name in taxonomy:
                known.append(event)
            else:
                log.error("[saga %s] event %s is not in the taxonomy %s: not published",
                          event.meta.get("saga_id"), event.name, taxonomy.path)
        return known

    def flush_soon(self, saga_id: str) -> None:
        """Publish the saga's pending events from a background thread of this process.

        Steps call this rather than :meth:`flush`, so publishing never delays the next
        step; what a dying process leaves unpublished, the sweep publishes.
        """
        if self._pid != os.getpid() or self._thread is None or not self._thread.is_alive():
            self._start_thread()
        self._pending.put(saga_id)

    def _start_thread(self) -> None:
        self._pid = os.getpid()
        self._pending = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._relay_forever, name="sagaline-outbox",
                                        daemon=True)
        self._thread.start()

    def _relay_forever(self) -> None:
        pending = self._pending
        while True:
            batch = {pending.get()}
            # Let the saga's next transitions (and other sagas') gather: one publication
            # then covers them all, at a cost of this much delay on the bus.
            time.sleep(RELAY_LINGER_S)
            while True:
                try:
                    batch.add(pending.get_nowait())
                except queue.Empty:
                    break
            self.flush_many(batch)

    def sweep(self, limit: int = 200, older_than_s: float = 1.0) -> int:
        """Publish for every saga whose outbox still holds entries; how many events went."""
        try:
            due = self.store.outbox_due(limit, older_than_s)
        except redis.RedisError as error:
            log.warning("outbox sweep could not read the index (%s)", error)
            return 0
        return self.flush_many(due)

    def events_of(self, saga_id: str) -> list[Event]:
        """Every event a saga's log stands for (published or not), in order."""
        saga, entries, _ = self.store.read_outbox(saga_id)
        if not saga:
            return []
        return [logged.event for logged in derive_events(saga_id, saga, entries)]
