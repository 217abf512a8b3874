"""The Celery app and the saga engine: what ``celery -A config worker`` loads.

With no ``SAGALINE_REDIS_URL`` the embedded Redis in the data folder is started (once,
shared by every process that uses the same folder).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from celery import Celery
from celery.signals import worker_process_init

from sagaline import EmbeddedRedis, EventBus, RedisStore, Sagaline, Taxonomy
from sagaline.choreography import ChoreographySaga
from sagaline.store.urls import backend_url, broker_url
from sagas import CHOREOGRAPHIES, SAGAS
from tasks import SUBSCRIBERS
from tasks.db import Database, database
from tasks.gate.mail import mailer
from tasks.nas.storage import storage as nas_storage
from tasks.nas.trials import TRAIN_TASK

from . import telemetry
from .settings import Settings, load_settings


def redis_url(settings: Settings) -> str:
    """The configured Redis URL, or the embedded server's (started if needed)."""
    if settings.redis_url is not None:
        return settings.redis_url.get_secret_value()
    embedded = EmbeddedRedis(settings.data_dir / "redis")
    embedded.start()
    return embedded.url


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
    app = Celery("sagaline")
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
    store = RedisStore.from_url(
        url, prefix=settings.key_prefix, retention_s=int(settings.retention.total_seconds()),
        handoff_s=settings.handoff.total_seconds(),
    )
    bus = EventBus.from_url(
        settings.bus_url.get_secret_value() if settings.bus_url is not None else url,
        prefix=settings.key_prefix, retention=settings.retention,
        maxlen=settings.events_maxlen, taxonomy=Taxonomy.load(settings.events_taxonomy),
    )
    bus.subscribe(*SUBSCRIBERS)
    engine = Sagaline(app, store, sagas=SAGAS, fault_injection=settings.fault_injection,
                      lease=settings.lease, max_recoveries=settings.max_recoveries, bus=bus,
                      lifecycle_events=settings.lifecycle_events,
                      enabled=settings.sagas_enabled,
                      run_bare_messages=settings.run_bare_messages)
    for choreography in choreographies:
        choreography.bind(engine)
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
