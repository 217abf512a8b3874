"""The event bus: one Redis stream, subscribers as Celery tasks, at-least-once delivery.

Why one stream for every domain rather than one per domain: a business flow crosses
domains (``orders`` → ``inventory`` → ``payments`` → ``saga``), and its events must keep
one order for the subscribers that react to them and for ``sagaline trace``; a single
stream gives that total order for free, and each subscriber still reads it at its own pace
through its own consumer group. Subscribers name the events they want with patterns
(``orders.*``); the dispatcher drops the rest before anything is enqueued. The stream is
capped (``XADD MAXLEN ~``). Events published outside a saga's log (a choreography's, an
app's) are also kept, for the retention time, in a per-correlation history that
``sagaline trace`` reads; a saga's own events it derives from the saga's log again.

Delivery, for each subscriber:

1. ``publish`` appends the event to the stream (and the flow's history), then asks for a
   dispatch (one ``sagaline.events.dispatch`` task in flight at a time; beat runs it too).
2. The dispatcher reads the subscriber's consumer group, enqueues one Celery task per
   matching event (``acks_late``, its task id the event id and subscriber), then
   acknowledges the entries. Entries read by a dispatcher that died before acknowledging
   are claimed again after ``claim_after`` (``XAUTOCLAIM``): at least once.
3. The subscriber task drops an event it already handled (its id is remembered for the
   retention time), runs the handler, remembers the id; a failing handler is retried
   with backoff by Celery, then recorded as a failed delivery.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

import redis
from celery import Celery

from sagaline import codec
from sagaline.errors import PublishError
from sagaline.events.canonical import Event
from sagaline.events.taxonomy import Taxonomy
from sagaline.naming import name_problems

log = logging.getLogger("sagaline.bus")

DISPATCH_TASK = "sagaline.events.dispatch"
"""The Celery task that hands new events to subscribers (beat runs it too)."""

DISPATCH_COALESCE_S = 5.0
"""How long a requested dispatch covers later requests (they send nothing more)."""

Handler = Callable[[Event], Any]
"""A subscriber's function: it receives the event."""


@dataclass(frozen=True)
class Subscription:
    """A subscriber: the Celery task that handles the events matching its patterns."""

    name: str
    """The Celery task's name, also the stream consumer group's."""
    patterns: tuple[str, ...]
    """Event names it wants; shell-style patterns (``orders.*``)."""
    fn: Handler
    """The handler."""
    max_retries: int = 5
    """How often a failing handler is retried before the delivery is recorded failed."""
    on_give_up: Callable[[Event, Exception], Any] | None = None
    """Called once when the handler failed for good (its retries spent, or an error
    marked ``non_retryable``); the delivery then counts as handled."""
    retry_delay_s: float = 0.2
    """The first retry's delay; each next one doubles it (at most 30 s)."""

    def matches(self, name: str) -> bool:
        """Whether the subscriber wants events named ``name``."""
        return any(fnmatch.fnmatchcase(name, p) for p in self.patterns)


def subscriber(*patterns: str, name: str, max_retries: int = 5) -> Callable[[Handler],
                                                                                 Subscription]:
    """Declare a function as a subscriber of events matching ``patterns``.

    The engine's bus registers it on the Celery app as the task ``name``.

    Example:
        >>> @subscriber("orders.order.created", name="mailer.on_order_created")
        ... def on_order_created(event: Event) -> None: ...
    """

    def declare(fn: Handler) -> Subscription:
        return Subscription(name, tuple(patterns), fn, max_retries)

    return declare


class EventBus:
    """Publishes events to a Redis stream and delivers them to subscriber tasks.

    Args:
        client: A redis-py client with ``decode_responses=True`` (the bus's own, so a bus
            in trouble fails fast instead of waiting on the store's long retries).
        prefix: The key prefix.
        retention: How long a flow's history and handled-event marks are kept.
        maxlen: About how many events the stream keeps.
        taxonomy: When given, events are checked against it before they are published.
        claim_after: How long an entry read by a dispatcher may stay unacknowledged before
            another dispatcher delivers it again.
    """

    def __init__(self, client: redis.Redis, *, prefix: str = "sagaline:",
                 retention: timedelta = timedelta(days=7), maxlen: int = 100_000,
                 taxonomy: Taxonomy | None = None,
                 claim_after: timedelta = timedelta(seconds=30)) -> None:
        """Wrap a client; subscribers are added with :meth:`subscribe`."""
        self.client = client
        self.prefix = prefix
        self.retention_s = max(int(retention.total_seconds()), 1)
        self.maxlen = maxlen
        self.taxonomy = taxonomy
        self.claim_after_ms = int(claim_after.total_seconds() * 1000)
        self.subscriptions: dict[str, Subscription] = {}
        self._groups_to_make: set[str] = set()
        self.app: Celery | None = None
        self.consumer = f"{socket.gethostname()}-{os.getpid()}"

    def check(self, name: str, payload: dict[str, Any] | None = None) -> list[str]:
        """What is wrong with an event about to be emitted (empty when nothing).

        The name must follow the convention and, when the bus has a taxonomy, be in it.
        """
        problems = name_problems(name)
        if not problems and self.taxonomy is not None and name not in self.taxonomy:
            problems = [f"{name!r} is not registered in {self.taxonomy.path}"]
        return problems

    @classmethod
    def from_url(cls, url: str, **options: Any) -> EventBus:
        """A bus on the Redis at ``url``, with short timeouts (publishing never waits long)."""
        client = redis.Redis.from_url(url, decode_responses=True, socket_timeout=2,
                                      socket_connect_timeout=2)
        return cls(client, **options)

    @property
    def stream(self) -> str:
        """The stream's key."""
        return f"{self.prefix}events"

    def history_key(self, correlation_id: str) -> str:
        """The key of one flow's event history."""
        return f"{self.prefix}events:flow:{correlation_id}"

    # -- publishing -----------------------------------------------------------------------

    def publish(self, *events: Event, history: bool = True) -> list[str]:
        """Append events to the stream (and, with ``history``, their flows' histories).

        The outbox relay publishes without history: a saga's events can be derived from
        its transition log again, which ``sagaline trace`` does. Returns the stream ids.

        Raises:
            InvalidEventError: An event's name is not registered (when a taxonomy is set).
            PublishError: The bus could not be written; nothing was acknowledged.
        """
        if not events:
            return []
        if self.taxonomy is not None:
            for event in events:
                self.taxonomy.get(event.name)
        try:
            self._make_groups()
            with self.client.pipeline(transaction=False) as pipe:
                for event in events:
                    body = event.model_dump_json()
                    pipe.xadd(self.stream, {"id": event.id, "name": event.name, "event": body},
                              maxlen=self.maxlen, approximate=True)
                    if history:
                        pipe.rpush(self.history_key(event.correlation_id), body)
                if history:
                    for flow in {e.correlation_id for e in events}:
                        pipe.expire(self.history_key(flow), self.retention_s)
                replies = pipe.execute()
        except redis.RedisError as error:
            raise PublishError(f"the event bus refused {len(events)} event(s): {error}") from error
        if any(s.matches(e.name) for e in events for s in self.subscriptions.values()):
            self.request_dispatch()
        step = 2 if history else 1
        return [str(r) for r in replies[: len(events) * step : step]]

    def read(self, count: int | None = None) -> list[Event]:
        """The events in the stream, oldest first (at most ``count``)."""
        entries = cast(list[Any], self.client.xrange(self.stream, count=count))
        return [Event.model_validate_json(fields["event"]) for _, fields in entries]

    def history(self, correlation_id: str) -> list[Event]:
        """Every event published for one flow, in publication order, each once."""
        raw = cast(list[str], self.client.lrange(self.history_key(correlation_id), 0, -1))
        seen: set[str] = set()
        events = []
        for body in raw:
            event = Event.model_validate_json(body)
            if event.id not in seen:
                seen.add(event.id)
                events.append(event)
        return events

    # -- subscribers ----------------------------------------------------------------------

    def bind(self, app: Celery) -> None:
        """Register the dispatch task (and every subscriber) on ``app``."""
        self.app = app
        if DISPATCH_TASK not in app.tasks:
            bus = self

            @app.task(name=DISPATCH_TASK, shared=False, lazy=False, ignore_result=True)  # type: ignore[untyped-decorator]
            def dispatch() -> int:
                """Hand new events to subscribers (see :meth:`EventBus.dispatch`)."""
                bus.client.delete(bus._dispatch_flag)
                return bus.dispatch()

        for subscription in self.subscriptions.values():
            self._bind_subscription(subscription)

    def subscribe(self, *subscriptions: Subscription) -> None:
        """Add subscribers; each gets a consumer group starting at the stream's end.

        The groups are made before this bus first publishes or dispatches, not here: an app
        subscribes as it is imported, and importing it must not need Redis. Every process
        of an app subscribes the same way, so the first event published anywhere finds the
        groups made.
        """
        for subscription in subscriptions:
            self.subscriptions[subscription.name] = subscription
            self._groups_to_make.add(subscription.name)
            if self.app is not None:
                self._bind_subscription(subscription)

    def _make_groups(self) -> None:
        """Make the consumer groups of the subscribers added since the last call."""
        for group in list(self._groups_to_make):
            self._ensure_group(group, "$")
            self._groups_to_make.discard(group)

    def _ensure_group(self, group: str, start: str) -> None:
        try:
            self.client.xgroup_create(self.stream, group, id=start, mkstream=True)
        except redis.ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise

    def _bind_subscription(self, subscription: Subscription) -> None:
        app = cast(Celery, self.app)
        if subscription.name in app.tasks:
            return
        bus = self

        @app.task(name=subscription.name, bind=True, shared=False, lazy=False,  # type: ignore[untyped-decorator]
                  ignore_result=True, acks_late=True, reject_on_worker_lost=True,
                  max_retries=subscription.max_retries)
        def deliver(task: Any, event: dict[str, Any]) -> str:
            return bus._deliver(task, subscription, event)

    def _deliver(self, task: Any, subscription: Subscription, raw: dict[str, Any]) -> str:
        event = Event.model_validate(raw)
        mark = f"{self.prefix}events:handled:{subscription.name}:{event.id}"
        if self.client.exists(mark):
            log.info("event %s (%s) already handled by %s: dropped", event.id, event.name,
                     subscription.name)
            return "duplicate"
        try:
            subscription.fn(event)
        except Exception as error:
            retries = int(getattr(task.request, "retries", 0) or 0)
            final = retries >= subscription.max_retries or getattr(error, "non_retryable", False)
            if final and subscription.on_give_up is not None:
                subscription.on_give_up(event, error)
                self.client.set(mark, "1", ex=self.retention_s)
                return "gave_up"
            if final:
                self.client.hset(f"{self.prefix}events:failed", f"{subscription.name}:{event.id}",
                                 codec.dumps({"subscriber": subscription.name,
                                              "event": event.model_dump(mode="json"),
                                              "error": f"{type(error).__name__}: {error}"}))
                log.error("subscriber %s gave up on event %s (%s): %s", subscription.name,
                          event.id, event.name, error)
                raise
            delay = min(subscription.retry_delay_s * 2 ** retries, 30.0)
            raise task.retry(exc=error, countdown=delay) from error
        self.client.set(mark, "1", ex=self.retention_s)
        return "handled"

    @property
    def _dispatch_flag(self) -> str:
        return f"{self.prefix}events:dispatch_pending"

    def request_dispatch(self) -> None:
        """Enqueue one dispatch unless one is already waiting (no-op without subscribers).

        The waiting dispatch may be lost (its worker was killed with the message fetched
        and unacknowledged, which Redis hands out again only after the visibility timeout).
        So a request that finds one waiting sends one more, delayed by the coalescing
        window, once per window: events published then reach their subscribers within
        seconds whatever happened to the first, without waiting for beat.
        """
        if self.app is None or not self.subscriptions:
            return
        window_ms = int(DISPATCH_COALESCE_S * 1000)
        if self.client.set(self._dispatch_flag, "1", nx=True, px=window_ms):
            self.app.send_task(DISPATCH_TASK)
        elif self.client.set(f"{self._dispatch_flag}:backstop", "1", nx=True, px=window_ms):
            self.app.send_task(DISPATCH_TASK, countdown=DISPATCH_COALESCE_S)

    def dispatch(self, count: int = 200) -> int:
        """Hand new (and abandoned) events to each subscriber's task; how many were sent."""
        app = self.app
        if app is None:
            return 0
        sent = 0
        try:
            self._make_groups()
        except redis.RedisError as error:
            log.warning("consumer groups not made (%s); beat will try again", error)
            return 0
        for subscription in list(self.subscriptions.values()):
            try:
                sent += self._dispatch_one(app, subscription, count)
            except redis.RedisError as error:
                log.warning("dispatch to %s failed (%s); beat will try again",
                            subscription.name, error)
        return sent

    def _dispatch_one(self, app: Celery, subscription: Subscription, count: int) -> int:
        group = subscription.name
        try:
            claimed = self.client.xautoclaim(self.stream, group, self.consumer,
                                             min_idle_time=self.claim_after_ms, count=count)
            entries: list[Any] = list(claimed[1])
            fresh = self.client.xreadgroup(group, self.consumer, {self.stream: ">"},
                                           count=count)
        except redis.ResponseError as error:
            if "NOGROUP" not in str(error):
                raise
            # The stream was recreated (dropped or restored): read it all again.
            self._ensure_group(group, "0")
            return 0
        for _, stream_entries in cast(Sequence[Any], fresh or []):
            entries.extend(stream_entries)
        sent = 0
        for _, fields in entries:
            if fields and subscription.matches(fields.get("name", "")):
                app.send_task(subscription.name, kwargs={"event": codec.loads(fields["event"])},
                              task_id=f"{fields['id']}:{subscription.name}")
                sent += 1
        if entries:
            self.client.xack(self.stream, group, *[entry_id for entry_id, _ in entries])
        return sent
