"""Sagas on a schedule: beat starts a saga at fixed due times, once per due time.

A :class:`Schedule` names a saga, its inputs and when it is due: a crontab (``cron="30 2 *
* *"``, read in UTC) or an interval (``every=timedelta(hours=1)``). :func:`install_schedules`
adds one ``celery beat`` entry per schedule and registers the task beat sends,
``sagaline.schedule.fire``, which starts the saga with the idempotency key
``schedule:<name>:<due time>``.

Every beat computes the same due times: an interval's boundaries are multiples of it since
the Unix epoch (not "every hour since this beat started"), a crontab's are its minutes in
UTC, and the due time sent is the boundary just reached, computed when the message is sent.
So two beats, or a beat restarted, send the same key for one firing, and the store starts
the saga once for it (the second start returns the first run). A beat that was down sends
the latest boundary it missed, once.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import KW_ONLY, dataclass, field, replace
from datetime import UTC, datetime, timedelta, tzinfo
from typing import TYPE_CHECKING, Any

from celery import Celery
from celery.beat import BeatLazyFunc
from celery.schedules import crontab, schedstate, schedule

from sagaline.errors import (
    DefinitionError,
    IdempotencyConflictError,
    InvalidInputError,
    SagasDisabledError,
    UnknownSagaError,
)
from sagaline.ids import derived_id, new_id

if TYPE_CHECKING:
    from sagaline.engine import Sagaline

log = logging.getLogger("sagaline.schedules")

FIRE_TASK = "sagaline.schedule.fire"
"""The task beat sends for a schedule's firing."""
SCHEDULE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
#: How far back a crontab's last due minute is looked for (in months, days, hours, minutes).
_MAX_CRON_STEPS = 100_000


def utc_now() -> datetime:
    """The current time, timezone-aware in UTC (the clock of every schedule)."""
    return datetime.now(UTC)


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def iso(moment: datetime) -> str:
    """A due time as the key and the message carry it: ``2026-12-04T02:30:00Z``."""
    return _utc(moment).strftime("%Y-%m-%dT%H:%M:%SZ")


class AlignedInterval(schedule):  # type: ignore[misc]
    """An interval whose boundaries are multiples of it since the Unix epoch (UTC).

    Celery's own interval counts from each beat's last run, so two beats (or a restarted
    one) fire at different moments; here every beat is due at the same instants.
    """

    def due_at(self, moment: datetime) -> datetime:
        """The boundary at or before ``moment``."""
        step = self.run_every // timedelta(microseconds=1)
        elapsed = (_utc(moment) - EPOCH) // timedelta(microseconds=1)
        return EPOCH + timedelta(microseconds=elapsed - elapsed % step)

    def next_after(self, moment: datetime) -> datetime:
        """The first boundary after ``moment``."""
        after: datetime = self.due_at(moment) + self.run_every
        return after

    def remaining_estimate(self, last_run_at: datetime) -> timedelta:
        """Time until the first boundary after ``last_run_at`` (negative once passed)."""
        return self.next_after(last_run_at) - _utc(self.now())

    def is_due(self, last_run_at: datetime) -> schedstate:
        """Due once a boundary passed since ``last_run_at``; next check at the next one."""
        now = _utc(self.now())
        if self.next_after(last_run_at) <= now:
            return schedstate(True, (self.next_after(now) - now).total_seconds())
        return schedstate(False, (self.next_after(last_run_at) - now).total_seconds())

    def __repr__(self) -> str:
        """``<every 0:00:02, aligned to the epoch>``."""
        return f"<every {self.run_every}, aligned to the epoch>"


class UtcCrontab(crontab):  # type: ignore[misc]
    """Celery's crontab read in UTC, whatever the app's timezone, with its last due minute."""

    @property
    def tz(self) -> tzinfo:
        """UTC: every beat reads the crontab in the same zone."""
        return UTC

    def due_at(self, moment: datetime) -> datetime:
        """The last minute at or before ``moment`` that the crontab names (UTC)."""
        t = _utc(moment).replace(second=0, microsecond=0)
        for _ in range(_MAX_CRON_STEPS):
            if t.month not in self.month_of_year:
                t = t.replace(day=1, hour=0, minute=0) - MINUTE
            elif t.day not in self.day_of_month or t.isoweekday() % 7 not in self.day_of_week:
                t = t.replace(hour=0, minute=0) - MINUTE
            elif t.hour not in self.hour:
                t = t.replace(minute=0) - MINUTE
            elif t.minute not in self.minute:
                earlier = [m for m in self.minute if m < t.minute]
                t = t.replace(minute=max(earlier)) if earlier else t.replace(minute=0) - MINUTE
            else:
                return t
        raise DefinitionError(f"crontab {self!r} names no minute in a long while before "
                              f"{iso(moment)}; check its fields")

    def next_after(self, moment: datetime) -> datetime:
        """The first minute after ``moment`` that the crontab names (UTC), as beat finds it."""
        start, delta, _ = self.remaining_delta(_utc(moment))
        return _utc(start + delta)


@dataclass(frozen=True)
class Schedule:
    """A saga started by beat at fixed due times, once per due time.

    Example:
        >>> Schedule("nightly-search", saga="cerebros_nas", cron="30 2 * * *",
        ...          inputs={"max_trials": 4})
        >>> Schedule("hourly-report", saga="shop_report", every=timedelta(hours=1),
        ...          due_input="period_end")
    """

    name: str
    """Letters, digits and ``_.-``; part of each firing's idempotency key."""
    _: KW_ONLY
    saga: str
    """The saga to start."""
    inputs: Mapping[str, Any] = field(default_factory=dict)
    """Its inputs (JSON), validated with the saga's model when installed."""
    cron: str | None = None
    """``minute hour day-of-month month day-of-week`` in UTC, like ``30 2 * * *``."""
    every: timedelta | None = None
    """An interval of whole seconds; due at multiples of it since the epoch."""
    enabled: bool = True
    """Whether beat fires it; a disabled schedule is still listed."""
    expires: timedelta | None = None
    """How long a firing's message may wait for a worker before it is dropped; default:
    the interval (at least a minute), or an hour for a crontab."""
    due_input: str | None = None
    """The input that receives the firing's due time (ISO 8601, UTC), if any: a report
    for "the hour up to its due time" then covers the same hour however late it runs."""
    description: str = ""
    """What it is for, as ``sagaline schedules`` shows it."""

    def __post_init__(self) -> None:
        """Check the declaration; raise :class:`DefinitionError` naming the field."""
        if not isinstance(self.name, str) or not SCHEDULE_NAME.match(self.name):
            raise DefinitionError(f"schedule {self.name!r}: name must be 1 to 100 letters, "
                                  "digits, '_', '.' or '-', like 'nightly-search'")
        if not isinstance(self.saga, str) or not self.saga:
            raise DefinitionError(f"schedule {self.name!r}: saga must name a saga")
        if (self.cron is None) == (self.every is None):
            raise DefinitionError(f"schedule {self.name!r}: cron or every: give exactly one, "
                                  "cron like '30 2 * * *' or every a timedelta")
        self._check_timing()
        try:
            object.__setattr__(self, "inputs", json.loads(json.dumps(dict(self.inputs))))
        except (TypeError, ValueError) as error:
            raise DefinitionError(f"schedule {self.name!r}: inputs must be a JSON object "
                                  f"({error})") from None
        if self.due_input is not None and self.due_input in self.inputs:
            raise DefinitionError(f"schedule {self.name!r}: due_input {self.due_input!r} is "
                                  "set by each firing; remove it from inputs")

    def _check_timing(self) -> None:
        if self.every is not None and (
                not isinstance(self.every, timedelta) or self.every < timedelta(seconds=1)
                or self.every % timedelta(seconds=1)):
            raise DefinitionError(f"schedule {self.name!r}: every must be a timedelta of "
                                  f"whole seconds, at least 1 s, not {self.every!r}")
        if self.expires is not None and self.expires <= timedelta(0):
            raise DefinitionError(f"schedule {self.name!r}: expires must be positive")
        if self.cron is not None:
            self.timetable()

    def timetable(self) -> AlignedInterval | UtcCrontab:
        """The Celery schedule beat checks: due at the same instants in every beat."""
        if self.every is not None:
            return AlignedInterval(self.every, nowfun=utc_now)
        try:
            fields = str(self.cron).split()
            if len(fields) != 5:
                raise ValueError(f"it has {len(fields)} fields, not 5")
            minute, hour, day_of_month, month, day_of_week = fields
            return UtcCrontab(minute, hour, day_of_week, day_of_month, month, nowfun=utc_now)
        except Exception as error:  # celery raises ValueError or its ParseException
            raise DefinitionError(
                f"schedule {self.name!r}: cron {self.cron!r} is not a crontab ({error}); write "
                "'minute hour day-of-month month day-of-week' in UTC, like '30 2 * * *'"
            ) from None

    @property
    def when(self) -> str:
        """How it repeats: ``cron 30 2 * * *`` or ``every 1:00:00``."""
        return f"cron {self.cron}" if self.cron is not None else f"every {self.every}"

    @property
    def expiry(self) -> timedelta:
        """How long a firing's message may wait (see :attr:`expires`)."""
        if self.expires is not None:
            return self.expires
        if self.every is not None:
            return max(self.every, MINUTE)
        return timedelta(hours=1)

    def key(self, due: datetime) -> str:
        """The idempotency key of the firing due at ``due``: ``schedule:<name>:<due>``."""
        return f"schedule:{self.name}:{iso(due)}"


def due_time(schedule: Schedule, now: datetime | None = None) -> datetime:
    """The due time of the firing at ``now``: the last boundary at or before it (UTC)."""
    return schedule.timetable().due_at(now or utc_now())


def next_due(schedule: Schedule, now: datetime | None = None) -> datetime:
    """When the schedule is next due after ``now`` (UTC)."""
    return schedule.timetable().next_after(now or utc_now())


def due_now(timetable: AlignedInterval | UtcCrontab) -> str:
    """The due time of the firing beat sends now (beat calls it as it sends the message)."""
    return iso(timetable.due_at(utc_now()))


def install_schedules(app: Celery, engine: Sagaline, schedules: Iterable[Schedule], *,
                      enabled: bool = True) -> tuple[Schedule, ...]:
    """Check ``schedules`` against ``engine``'s sagas and add them to ``app``'s beat.

    Registers :data:`FIRE_TASK` (also with no schedule, so workers take firings sent
    before a schedule was switched off), and adds a beat entry ``schedule:<name>`` for each
    enabled schedule; ``enabled=False`` switches every one off. It may be called again to
    add more (an app that registers more sagas).

    Returns:
        The schedules, each marked disabled when beat will not fire it.

    Raises:
        DefinitionError: Two schedules share a name, or a schedule names an unknown saga
            or inputs its saga refuses; the message names the schedule and the field.
    """
    schedules = tuple(schedules)
    _check(engine, schedules)
    if FIRE_TASK not in app.tasks:
        _register_fire(app, engine)
    entries = dict(app.conf.beat_schedule or {})
    listed = []
    for item in schedules:
        on = enabled and item.enabled
        if on:
            timetable = item.timetable()
            entries[f"schedule:{item.name}"] = {
                "task": FIRE_TASK, "schedule": timetable,
                "args": (item.name, item.saga, dict(item.inputs), item.due_input),
                "kwargs": {"due": BeatLazyFunc(due_now, timetable)},
                "options": {"expires": item.expiry.total_seconds()},
            }
        listed.append(item if on == item.enabled else _disabled(item))
    app.conf.beat_schedule = entries
    return tuple(listed)


def _disabled(item: Schedule) -> Schedule:
    return replace(item, enabled=False)


def _check(engine: Sagaline, schedules: tuple[Schedule, ...]) -> None:
    """Refuse duplicate names, unknown sagas and inputs the saga's model refuses."""
    seen: set[str] = set()
    for item in schedules:
        if item.name in seen:
            raise DefinitionError(f"schedule {item.name!r} is declared twice; name each once")
        seen.add(item.name)
        try:
            saga = engine.registry.get(item.saga)
        except UnknownSagaError as error:
            raise DefinitionError(f"schedule {item.name!r}: saga: {error}") from None
        inputs = dict(item.inputs)
        if item.due_input is not None:
            inputs[item.due_input] = iso(EPOCH)
        try:
            saga.validate_inputs(inputs)
        except InvalidInputError as error:
            problems = "; ".join(f"inputs.{e['field']}: {e['problem']}" for e in error.errors)
            raise DefinitionError(f"schedule {item.name!r}: {problems}") from None


def _register_fire(app: Celery, engine: Sagaline) -> None:
    @app.task(name=FIRE_TASK, shared=False, lazy=False, ignore_result=True)  # type: ignore[untyped-decorator]
    def fire(schedule: str, saga: str, inputs: dict[str, Any], due_input: str | None = None,
             due: str | None = None) -> dict[str, Any]:
        """Start the schedule's saga for the firing due at ``due``, unless one started."""
        return fire_once(engine, schedule, saga, inputs, due_input=due_input, due=due)


def fire_once(engine: Sagaline, schedule: str, saga: str, inputs: Mapping[str, Any], *,
              due_input: str | None, due: str | None) -> dict[str, Any]:
    """Start ``saga`` for the firing of ``schedule`` due at ``due`` (ISO 8601), once.

    Returns ``{"schedule", "due", "saga_id", "outcome"}``, the outcome ``started``,
    ``duplicate`` (the firing started a saga already), ``conflict`` (its key started
    another saga or other inputs) or ``disabled`` (sagas are switched off here).

    Raises:
        DefinitionError: ``due`` is missing or not a time (a message not sent by beat).
    """
    moment = _parse_due(schedule, due)
    key = f"schedule:{schedule}:{iso(moment)}"
    values = dict(inputs)
    if due_input is not None:
        values[due_input] = iso(moment)
    cid = new_id()
    answer: dict[str, Any] = {"schedule": schedule, "due": iso(moment), "saga_id": None}
    try:
        handle = engine.start(saga, values, idempotency_key=key, correlation_id=cid,
                              causation_id=derived_id(moment.timestamp(), key))
    except IdempotencyConflictError as error:
        log.error("[schedule %s] firing due %s not started: %s", schedule, iso(moment), error)
        return {**answer, "outcome": "conflict"}
    except SagasDisabledError:
        log.warning("[schedule %s] firing due %s not started: sagas are switched off here",
                    schedule, iso(moment))
        return {**answer, "outcome": "disabled"}
    started = handle.correlation_id == cid
    late = utc_now() - moment
    log.info("[schedule %s] firing due %s (%.1f s ago) %s saga %s", schedule, iso(moment),
             late.total_seconds(), "started" if started else "had already started",
             handle.saga_id)
    return {**answer, "saga_id": handle.saga_id,
            "outcome": "started" if started else "duplicate"}


def _parse_due(schedule: str, due: str | None) -> datetime:
    try:
        return _utc(datetime.fromisoformat(str(due)))
    except ValueError:
        raise DefinitionError(
            f"schedule {schedule!r}: the firing carries no due time ({due!r}); only beat "
            "sends it, with the entries install_schedules adds") from None
