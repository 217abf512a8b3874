"""The Celery app and the saga engine: what ``celery -A config worker`` loads.

With no ``SAGALINE_REDIS_URL`` the embedded Redis in the data folder is used (shared by every
process that uses the same folder). Importing this module starts nothing: the server is
started on the first real connection, by the store's and the bus's clients
(:meth:`~sagaline.EmbeddedRedis.client`) and by the app's broker connections
(:class:`EmbeddedRedisCelery`), so ``sagaline sagas`` or ``sagaline --help`` leave nothing
running, while a worker, beat, Flower or ``celery -A config inspect`` find it up.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis
from celery import Celery
from celery.signals import worker_process_init
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from sagaline import EmbeddedRedis, EventBus, RedisStore, Sagaline, Taxonomy
from sagaline.choreography import ChoreographySaga
from sagaline.schedules import install_schedules
from sagaline.store.urls import backend_url, broker_url
from sagas import CHOREOGRAPHIES, SAGAS
from tasks import SUBSCRIBERS
from tasks.db import Database, database
from tasks.gate.mail import mailer
from tasks.nas.storage import storage as nas_storage
from tasks.nas.trials import TRAIN_TASK

from . import telemetry
from .schedules import SCHEDULES, extra_schedules
from .settings import Settings, load_settings


def embedded_redis(settings: Settings) -> EmbeddedRedis | None:
    """The embedded Redis the settings use, or ``None`` when a Redis URL is configured."""
    if settings.redis_url is not None:
        return None
    return EmbeddedRedis.for_app(settings.data_dir)


def redis_url(settings: Settings) -> str:
    """The configured Redis URL, or the embedded server's (computed only: nothing starts)."""
    if settings.redis_url is not None:
        return settings.redis_url.get_secret_value()
    return EmbeddedRedis.for_app(settings.data_dir).url


class EmbeddedRedisCelery(Celery):  # type: ignore[misc]
    """A Celery app whose broker connections start its embedded Redis first, if it has one.

    Every broker connection of a process goes through these three methods (a worker's
    consumer, beat, Flower, ``app.control``, the producers), so the server is up before
    kombu connects; it is started once per process (:meth:`EmbeddedRedis.ensure_running`).
    """

    embedded: EmbeddedRedis | None = None
    """The server to start; ``None`` with a configured Redis URL."""

    def connection_for_read(self, url: str | None = None, **kwargs: Any) -> Any:
        """The broker connection for consuming, the embedded server started first."""
        self._start_embedded()
        return super().connection_for_read(url, **kwargs)

    def connection_for_write(self, url: str | None = None, **kwargs: Any) -> Any:
        """The broker connection for publishing, the embedded server started first."""
        self._start_embedded()
        return super().connection_for_write(url, **kwargs)

    def connection(self, *args: Any, **kwargs: Any) -> Any:
        """A broker connection (Flower's way), the embedded server started first."""
        self._start_embedded()
        return super().connection(*args, **kwargs)

    def _start_embedded(self) -> None:
        if self.embedded is not None:
            self.embedded.ensure_running()


def store_client_options() -> dict[str, Any]:
    """How the store's client rides out a Redis restart of up to a minute.

    The options :meth:`RedisStore.from_url` uses, for a client made another way.
    """
    return {
        "decode_responses": True, "health_check_interval": 30, "socket_timeout": 15,
        "socket_connect_timeout": 5,
        "retry": Retry(ExponentialBackoff(cap=2.0, base=0.05), retries=40),
        "retry_on_error": [redis.ConnectionError, redis.TimeoutError],
    }


def create_store(settings: Settings, embedded: EmbeddedRedis | None) -> RedisStore:
    """The saga store: on the embedded server (started on first use), or the configured URL."""
    options: dict[str, Any] = {
        "prefix": settings.key_prefix, "retention_s": int(settings.retention.total_seconds()),
        "handoff_s": settings.handoff.total_seconds(),
    }
    if embedded is None:
        return RedisStore.from_url(redis_url(settings), **options)
    return RedisStore(embedded.client(**store_client_options()), **options)


def create_bus(settings: Settings, embedded: EmbeddedRedis | None) -> EventBus:
    """The event bus: on ``bus_url``, else on the same Redis as the store."""
    options: dict[str, Any] = {
        "prefix": settings.key_prefix, "retention": settings.retention,
        "maxlen": settings.events_maxlen, "taxonomy": Taxonomy.load(settings.events_taxonomy),
    }
    if settings.bus_url is not None:
        return EventBus.from_url(settings.bus_url.get_secret_value(), **options)
    if embedded is None:
        return EventBus.from_url(redis_url(settings), **options)
    # As EventBus.from_url: short timeouts, publishing never waits long.
    return EventBus(embedded.client(decode_responses=True, socket_timeout=2,
                                    socket_connect_timeout=2), **options)


#: How every Celery app of the project talks: JSON only (the engine refuses anything else),
#: late acks with redelivery of a lost worker's message, one message at a time, UTC.
WIRE_SETTINGS: dict[str, Any] = {
    "task_serializer": "json",
    "result_serializer": "json",
    "event_serializer": "json",
    "accept_content": ["json"],
    "result_accept_content": ["json"],
    "task_acks_late": True,
    "task_reject_on_worker_lost": True,
    "worker_prefetch_multiplier": 1,
    "broker_connection_retry_on_startup": True,
    "timezone": "UTC",
    "enable_utc": True,
}


def create_app(settings: Settings, *, db: Database = database,
               choreographies: Sequence[ChoreographySaga] = CHOREOGRAPHIES,
               ) -> tuple[Celery, Sagaline]:
    """Build the Celery app and the engine with every saga of this project.

    ``db`` is configured with the settings' database (its schema brought up to date);
    ``choreographies`` are bound to the engine (a second engine in one process, as the
    tests make, binds none).
    """
    url = redis_url(settings)
    app = EmbeddedRedisCelery("sagaline")
    app.embedded = embedded = embedded_redis(settings)
    app.conf.update(
        **WIRE_SETTINGS,
        broker_url=broker_url(url),
        result_backend=backend_url(url),
        worker_concurrency=settings.worker_concurrency,
        task_default_queue=settings.queue,
        broker_transport_options={
            "visibility_timeout": int(settings.visibility_timeout.total_seconds())
        },
        result_expires=3600,
        worker_send_task_events=True,
        task_send_sent_event=True,
        task_routes={TRAIN_TASK: {"queue": settings.training_queue}},
    )
    app.conf.beat_schedule = {
        "sagaline-recover": {
            "task": "sagaline.recover",
            "schedule": settings.recovery_interval.total_seconds(),
            "options": {"expires": settings.recovery_interval.total_seconds()},
        },
        "sagaline-dispatch-events": {
            "task": "sagaline.events.dispatch",
            "schedule": settings.recovery_interval.total_seconds(),
            "options": {"expires": settings.recovery_interval.total_seconds()},
        },
    }
    app.conf.beat_schedule_filename = str(settings.data_dir / "celerybeat-schedule")
    store = create_store(settings, embedded)
    bus = create_bus(settings, embedded)
    bus.subscribe(*SUBSCRIBERS)
    engine = Sagaline(app, store, sagas=SAGAS, fault_injection=settings.fault_injection,
                      lease=settings.lease, max_recoveries=settings.max_recoveries, bus=bus,
                      lifecycle_events=settings.lifecycle_events,
                      enabled=settings.sagas_enabled,
                      run_bare_messages=settings.run_bare_messages)
    for choreography in choreographies:
        choreography.bind(engine)
    settings.data_dir.mkdir(parents=True, exist_ok=True)  # the SQLite file's folder
    db.configure(settings.sqlite_url)
    nas_storage.configure(settings.nas_dir or settings.data_dir / "nas")
    mailer.configure(
        smtp_url=settings.smtp_url.get_secret_value() if settings.smtp_url else None,
        outbox=settings.data_dir / "outbox", sender=settings.mail_from,
        public_url=settings.public_url)
    return app, engine


@worker_process_init.connect  # type: ignore[untyped-decorator]
def _fresh_connections_after_fork(**_: Any) -> None:
    # A pool child must not share its parent's SQL connections.
    database.dispose(close=False)


settings = load_settings()
app, engine = create_app(settings)
telemetry.install(app, settings)
schedules = install_schedules(app, engine, [*SCHEDULES, *extra_schedules(settings.extra_schedules)],
                              enabled=settings.schedules_enabled)
