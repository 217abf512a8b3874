"""Settings: one object, read once from ``SAGALINE_*`` environment variables (and ``.env``)."""

from __future__ import annotations

import difflib
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "SAGALINE_"


class ExtraSchedule(BaseModel):
    """A schedule given in the environment (``SAGALINE_EXTRA_SCHEDULES``)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    """The schedule's name (its firings' idempotency keys start with it)."""
    saga: str
    """The saga it starts."""
    inputs: dict[str, Any] = Field(default_factory=dict)
    """The saga's inputs."""
    cron: str | None = None
    """A crontab, read in UTC (``"0 3 * * *"``); or ``every_s``."""
    every_s: int | None = Field(default=None, ge=1)
    """An interval in seconds, aligned to the epoch; or ``cron``."""


class Settings(BaseSettings):
    """Everything the app reads from its environment; unset means the embedded default."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_file=".env", extra="ignore")

    redis_url: SecretStr | None = None
    """Redis for the broker and saga state (``redis://``, ``rediss://``, ``unix://``);
    unset: the embedded Redis in ``data_dir``."""
    database_url: str | None = None
    """SQLAlchemy URL of the example participants' store; unset: SQLite in ``data_dir``."""
    queue: str = Field(default="celery", pattern=r"^[A-Za-z0-9_.:-]{1,100}$")
    """The queue saga messages go to when a step names none; ``sagaline worker`` consumes
    it. Apps sharing one Redis keep apart by their queue and ``key_prefix``."""
    smtp_url: SecretStr | None = None
    """Where mail goes (``smtp://host:port``, ``smtp+starttls://user:pass@host:587``,
    ``smtps://...``); unset: mails are written as ``.eml`` files into ``data_dir/outbox``."""
    mail_from: str = "Thunderline <no-reply@thunderline.localhost>"
    """The sender of the mails the sagas send."""
    public_url: str = "http://localhost:8000"
    """The site magic links point at."""
    api_tokens: SecretStr | None = None
    """Bearer tokens ``sagaline api`` accepts, comma-separated (at least 32 characters
    each); only their SHA-256 is kept in memory."""
    api_token_hashes: str | None = None
    """Tokens it accepts as ``sha256:<hex>``, comma-separated, for deployments that hold no
    raw token."""
    flower_basic_auth: SecretStr | None = None
    """``user:password`` (comma-separated for several) that ``sagaline flower`` requires;
    Flower is not started without it."""
    flower_port: int = Field(default=5555, ge=1, le=65535)
    """The port ``sagaline flower`` listens on."""
    flower_address: str = "127.0.0.1"
    """The address ``sagaline flower`` listens on (``0.0.0.0`` to serve other machines)."""
    training_queue: str = Field(default="training", pattern=r"^[A-Za-z0-9_.:-]{1,100}$")
    """The queue NAS training steps go to: run training workers apart from the light ones
    (``sagaline worker -Q training``)."""
    nas_dir: Path | None = None
    """Where NAS training keeps checkpoints and model artifacts; unset: ``data_dir/nas``.
    Training workers on several machines need it on shared storage."""
    data_dir: Path = Field(default_factory=lambda: Path.cwd() / "var")
    """Where the embedded Redis and the SQLite file live."""
    key_prefix: str = "sagaline:"
    """Prefix of every saga key in Redis."""
    retention: timedelta = timedelta(days=7)
    """How long a finished saga's records are kept."""
    visibility_timeout: timedelta = timedelta(hours=2)
    """How long a delivered, unacknowledged message waits before Redis hands it out again;
    keep it above the longest step's time limit."""
    lease: timedelta = timedelta(seconds=30)
    """How long a running step's claim lasts without a heartbeat (renewed every third)."""
    handoff: timedelta = timedelta(minutes=2)
    """How long the next message of a saga may take to start before recovery looks."""
    recovery_interval: timedelta = timedelta(seconds=15)
    """How often beat runs the recovery sweep."""
    max_recoveries: int = Field(default=5, ge=1)
    """Recoveries without progress before the operation waited on is failed."""
    worker_concurrency: int = Field(default=2, ge=1)
    """Worker processes started by ``sagaline worker`` and the demo."""
    fault_injection: bool = False
    """Whether workers honour injected faults (tests and ``sagaline.testing`` only)."""
    run_bare_messages: bool = False
    """Whether a message for a saga task without the engine's envelope (``task.delay()``)
    runs the plain function; off, a worker refuses it (it would run with no saga record).
    For unit tests only."""
    log_level: str = "INFO"
    """The workers' log level."""
    sagas_enabled: bool = True
    """Feature flag: whether sagas may be started (off: a start is refused, nothing is
    enqueued; sagas already running go on)."""
    schedules_enabled: bool = True
    """Feature flag: whether beat fires the sagas on a schedule (``config/schedules.py``);
    off, they are still listed by ``sagaline schedules``, marked disabled."""
    extra_schedules: list[ExtraSchedule] = Field(default_factory=list)
    """More schedules for this deployment, as JSON: ``[{"name": "nightly-report", "saga":
    "shop_report", "cron": "0 3 * * *", "inputs": {...}}]`` (``every_s`` for an interval)."""
    lifecycle_events: bool = True
    """Feature flag: whether the engine's lifecycle events (``saga.started``...) go to the
    event bus; events the steps emit go either way."""
    bus_url: SecretStr | None = None
    """Redis for the event bus; unset: the same Redis as the broker and saga state."""
    events_taxonomy: Path = Field(
        default_factory=lambda: Path(__file__).resolve().parent.parent / "events.toml")
    """The event taxonomy file: every event name the project publishes."""
    events_maxlen: int = Field(default=100_000, ge=1000)
    """About how many events the bus's stream keeps (each flow's history is kept apart,
    for the retention time)."""
    log_transitions: bool = True
    """Log one line per saga transition, with its correlation id (``sagaline.transitions``)."""
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    """Workers serve Prometheus metrics on this port (``/metrics``); unset: no metrics."""
    metrics_addr: str = "0.0.0.0"
    """The address the metrics server listens on."""
    otel: bool = False
    """Emit OpenTelemetry spans (a trace per saga) and instrument Celery, through the global
    tracer provider (one is made if the process set none: add your exporter to it)."""
    otel_spans_file: Path | None = None
    """Also write every finished span to this file as JSON lines (debugging, tests)."""

    @field_validator("key_prefix")
    @classmethod
    def _prefix_ends_with_colon(cls, value: str) -> str:
        if not value or not value.endswith(":"):
            raise ValueError("must be non-empty and end with ':', like 'sagaline:'")
        return value

    @property
    def sqlite_url(self) -> str:
        """The database URL, the SQLite default filled in."""
        return self.database_url or f"sqlite:///{self.data_dir.resolve() / 'sagaline.db'}"


def unknown_variables(environ: dict[str, str] | None = None) -> list[str]:
    """``SAGALINE_*`` variables that name no setting, each with a suggestion if one is close."""
    known = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    known |= {ENV_PREFIX + "APP", ENV_PREFIX + "VENV"}  # read by the CLI and dev.py
    problems = []
    for name in sorted(environ if environ is not None else os.environ):
        if name.startswith(ENV_PREFIX) and name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            problems.append(f"{name} is not a Sagaline setting{hint}")
    return problems


def load_settings() -> Settings:
    """Read the settings, refusing misspelled ``SAGALINE_*`` variables."""
    problems = unknown_variables()
    if problems:
        raise ValueError("; ".join(problems))
    return Settings()
