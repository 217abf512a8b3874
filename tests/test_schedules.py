"""Sagas on a schedule: due times every beat agrees on, one saga per firing with two real
``celery beat`` processes (one killed and restarted), the ``sagaline schedules`` listing,
and the hourly shop report saga on a real worker.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from celery.beat import BeatLazyFunc
from sqlalchemy import select

from sagaline import DefinitionError, Sagaline, SagaRun, SagaStatus, Schedule, new_id
from sagaline.schedules import (
    EPOCH,
    FIRE_TASK,
    AlignedInterval,
    due_time,
    fire_once,
    install_schedules,
    next_due,
)
from tasks.orders import Order
from tasks.payments import Payment
from tasks.reports.models import ShopReport
from tests.conftest import DATA_DIR, ROOT, STARTED, kill_group
from tests.support.app import QUICK_SCHEDULE
from tests.support.thunderline import Backend

EVERY = timedelta(seconds=2)
"""The quick test schedule's interval (tests/support/app.py)."""


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout} s")
        time.sleep(0.2)


# -- due times ------------------------------------------------------------------------------


def test_interval_boundaries_are_multiples_of_it_since_the_epoch() -> None:
    """Every beat finds the same boundaries, whenever it started."""
    seven = Schedule("s", saga="t_quick", every=timedelta(seconds=7), inputs={"tag": "x"})
    moment = at("2026-03-04T10:00:03.5")
    due = due_time(seven, moment)
    assert (due - EPOCH) % timedelta(seconds=7) == timedelta(0)
    assert due <= moment < due + timedelta(seconds=7) == next_due(seven, moment)
    assert due_time(seven, due) == due  # a boundary is its own due time
    hourly = Schedule("h", saga="t_quick", every=timedelta(hours=1), inputs={"tag": "x"})
    assert due_time(hourly, moment) == at("2026-03-04T10:00:00")
    assert next_due(hourly, moment) == at("2026-03-04T11:00:00")


def test_an_aligned_interval_is_due_once_per_boundary() -> None:
    """Beat asks ``is_due(last_run_at)``: due once a boundary passed since the last run, and
    told to check again at the next boundary.
    """
    now = at("2026-03-04T10:00:05.25")
    timetable = AlignedInterval(timedelta(seconds=2), nowfun=lambda: now)
    due, next_check = timetable.is_due(at("2026-03-04T10:00:03.9"))  # 04 passed since
    assert due and next_check == pytest.approx(0.75)
    due, next_check = timetable.is_due(at("2026-03-04T10:00:04.1"))  # 06 not yet
    assert not due and next_check == pytest.approx(0.75)
    assert timetable.is_due(at("2026-03-04T09:00:00"))[0]  # down for an hour: due once


@pytest.mark.parametrize("cron", ["30 2 * * *", "0 * * * *", "*/15 9-17 * * 1-5",
                                  "5 4 1,15 * *", "0 0 29 2 *", "0 12 13 * 5", "* * * * *"])
def test_a_crontabs_due_time_is_its_last_minute_at_or_before_now(cron: str) -> None:
    """The due time sent is the last minute the crontab names; the next one is the one
    Celery's crontab fires at, with none between them.
    """
    timetable = Schedule("c", saga="t_quick", cron=cron, inputs={"tag": "x"}).timetable()
    rng = random.Random(cron)
    for _ in range(200):
        moment = EPOCH + timedelta(seconds=rng.randrange(1_600_000_000, 1_900_000_000))
        due, following = timetable.due_at(moment), timetable.next_after(moment)
        assert due <= moment < following
        assert timetable.next_after(due - timedelta(seconds=1)) == due
        assert timetable.next_after(due) == following
        assert timetable.due_at(following) == following


def test_a_firings_key_is_the_schedules_name_and_its_due_time_in_utc() -> None:
    nightly = Schedule("nightly-nas", saga="cerebros_nas", cron="30 2 * * *")
    due = due_time(nightly, at("2026-03-04T10:00:00"))
    assert nightly.key(due) == "schedule:nightly-nas:2026-03-04T02:30:00Z"
    assert nightly.key(due.astimezone(tz=None)) == nightly.key(due)


# -- declarations refused -------------------------------------------------------------------


@pytest.mark.parametrize(("options", "field"), [
    ({"cron": "61 * * * *"}, "cron"),
    ({"cron": "30 2 * *"}, "cron"),
    ({"cron": "30 2 * * *", "every": timedelta(hours=1)}, "cron or every"),
    ({}, "cron or every"),
    ({"every": timedelta(milliseconds=1500)}, "every"),
    ({"every": timedelta(0)}, "every"),
    ({"every": EVERY, "inputs": {"when": datetime.now(UTC)}}, "inputs"),
    ({"every": EVERY, "inputs": {"tag": "x"}, "due_input": "tag"}, "due_input"),
])
def test_a_wrong_schedule_is_refused_naming_it_and_the_field(options: dict[str, Any],
                                                             field: str) -> None:
    with pytest.raises(DefinitionError, match=f"schedule 'bad': {field}"):
        Schedule("bad", saga="t_quick", **options)


def test_a_bad_name_is_refused() -> None:
    with pytest.raises(DefinitionError, match="name must be"):
        Schedule("nightly search", saga="t_quick", every=EVERY)


@pytest.mark.parametrize(("schedule", "message"), [
    (Schedule("ghost", saga="no_such_saga", every=EVERY),
     "schedule 'ghost': saga: no saga named 'no_such_saga'"),
    (Schedule("untagged", saga="t_quick", every=EVERY), "schedule 'untagged': inputs.tag"),
    (Schedule("late", saga="shop_report", every=EVERY, inputs={"hours": 0}),
     "schedule 'late': inputs.hours"),
])
def test_installing_refuses_an_unknown_saga_or_inputs_its_saga_refuses(
        engine: Sagaline, schedule: Schedule, message: str) -> None:
    """The app fails at start, naming the schedule and the field."""
    app = Celery("refusing")
    with pytest.raises(DefinitionError, match=re.escape(message)):
        install_schedules(app, engine, [schedule])
    assert FIRE_TASK not in app.tasks and not app.conf.beat_schedule


def test_installing_adds_one_beat_entry_per_enabled_schedule(engine: Sagaline) -> None:
    """Each entry sends the fire task with its due time computed as it is sent."""
    app = Celery("installing")
    app.conf.beat_schedule = {"housekeeping": {"task": "x", "schedule": 1.0}}
    on = Schedule("on", saga="t_quick", every=EVERY, inputs={"tag": "x"})
    off = Schedule("off", saga="t_quick", every=EVERY, inputs={"tag": "x"}, enabled=False)
    assert install_schedules(app, engine, [on, off]) == (on, off)
    entries = app.conf.beat_schedule
    assert set(entries) == {"housekeeping", "schedule:on"}
    entry = entries["schedule:on"]
    assert entry["task"] == FIRE_TASK and entry["options"] == {"expires": 60.0}
    assert entry["args"] == ("on", "t_quick", {"tag": "x"}, None)
    lazy = entry["kwargs"]["due"]
    assert isinstance(lazy, BeatLazyFunc)
    assert (at(lazy()[:-1]) - EPOCH) % EVERY == timedelta(0)
    assert FIRE_TASK in app.tasks

    switched_off = Celery("switched-off")
    listed = install_schedules(switched_off, engine, [on], enabled=False)
    assert [s.enabled for s in listed] == [False] and not switched_off.conf.beat_schedule


# -- two beats, one saga per firing -------------------------------------------------------


def start_schedule_beat(name: str, tag: str) -> subprocess.Popen[bytes]:
    """A real ``celery beat`` with its own schedule file, firing the quick test schedule."""
    log = open(DATA_DIR / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "tests.support.app", "beat", "-l", "info",
         "-s", str(DATA_DIR / f"{name}-schedule")],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), QUICK_SCHEDULE: tag})
    STARTED.append(process)
    return process


def due_of(run: SagaRun) -> datetime:
    """A firing's due time: its run's causation id is a UUIDv7 stamped with it."""
    assert run.causation_id is not None
    return EPOCH + timedelta(milliseconds=uuid.UUID(run.causation_id).int >> 80)


def fired_runs(engine: Sagaline, tag: str) -> list[SagaRun]:
    """The quick schedule's runs (among the newest: nothing else starts sagas meanwhile)."""
    return [run for run in engine.list(limit=500)
            if run.name == "t_quick" and run.inputs.get("tag") == tag]


def assert_one_run_per_due_time(runs: list[SagaRun]) -> list[datetime]:
    """Each due time started one saga, and no due time between the first and last was
    missed; returns the due times, in order.
    """
    per_due = Counter(due_of(run) for run in runs)
    assert [d for d, n in per_due.items() if n > 1] == [], "a firing started two sagas"
    dues = sorted(per_due)
    gaps = [later - earlier for earlier, later in pairwise(dues)]
    assert set(gaps) <= {EVERY}, f"firings missed: {[d.isoformat() for d in dues]}"
    return dues


@pytest.mark.usefixtures("worker")
def test_two_beats_start_one_saga_per_firing_also_when_one_restarts(engine: Sagaline) -> None:
    """Two beats fire the 2 s schedule; over 5 firings and more, each due time started one
    saga. One beat is killed and restarted on its schedule file: still one per due time.
    """
    tag = f"q{uuid.uuid4().hex[:12]}"
    first, second = start_schedule_beat(f"beat-a-{tag}", tag), \
        start_schedule_beat(f"beat-b-{tag}", tag)
    try:
        wait_until(lambda: len({due_of(r) for r in fired_runs(engine, tag)}) >= 6, 90,
                   "six firings")
        before = assert_one_run_per_due_time(fired_runs(engine, tag))
        kill_group(second)
        sent_before_restart = sent_by("b", tag)
        second = start_schedule_beat(f"beat-b-{tag}", tag)
        wait_until(lambda: sent_by("b", tag) >= sent_before_restart + 4, 90,
                   "four firings sent by the restarted beat")
        wait_until(lambda: len({due_of(r) for r in fired_runs(engine, tag)})
                   >= len(before) + 4, 90, "four firings after the restart")
    finally:
        kill_group(first)
        kill_group(second)
    runs = fired_runs(engine, tag)
    dues = assert_one_run_per_due_time(runs)
    assert len(dues) >= len(before) + 4 >= 10
    for run in runs:  # the key is the schedule's name and the due time: it finds the run
        key = f"schedule:t-quick-{tag}:{due_of(run):%Y-%m-%dT%H:%M:%SZ}"
        assert engine.start("t_quick", {"tag": tag}, idempotency_key=key).saga_id \
            == run.saga_id
    sent = [sent_by(b, tag) for b in "ab"]
    assert min(sent) >= 5 and sum(sent) > len(dues), f"the beats sent {sent}"
    handled = f"[schedule t-quick-{tag}] firing due"
    wait_until(lambda: worker_log().count(handled) >= sum(sent), 60,
               "the worker taking every firing sent")
    assert len(re.findall(rf"\[schedule t-quick-{tag}\] .* had already started",
                          worker_log())) >= 5, "the second message of a firing started nothing"
    assert_one_run_per_due_time(fired_runs(engine, tag))


def worker_log() -> str:
    """What the session's worker logged."""
    return (DATA_DIR / "main.log").read_text()


def sent_by(beat: str, tag: str) -> int:
    """How many firings of the quick schedule that beat's log says it sent."""
    log = DATA_DIR / f"beat-{beat}-{tag}.log"
    return log.read_text().count(f"Sending due task schedule:t-quick-{tag}")


# -- the command ----------------------------------------------------------------------------


def sagaline(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "SAGALINE_REDIS_URL"}
    return subprocess.run([str(Path(sys.executable).with_name("sagaline")), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120,
                          env={**environ, "PYTHONPATH": str(ROOT), **env})


def test_the_schedules_command_lists_next_due_times_and_starts_no_redis(tmp_path: Path
                                                                         ) -> None:
    """``sagaline schedules --json`` reads the app's schedules; no Redis is started."""
    before = datetime.now(UTC)
    result = sagaline("schedules", "--json", env={"SAGALINE_DATA_DIR": str(tmp_path),
                                                  "SAGALINE_SCHEDULES_ENABLED": "true"})
    assert result.returncode == 0, result.stderr
    listed = {s["name"]: s for s in json.loads(result.stdout)}
    assert set(listed) == {"nightly-nas-search", "hourly-shop-report"}
    nightly, hourly = listed["nightly-nas-search"], listed["hourly-shop-report"]
    assert (nightly["saga"], nightly["cron"], nightly["enabled"]) == ("cerebros_nas",
                                                                      "30 2 * * *", True)
    assert nightly["next_due"].endswith("T02:30:00Z")
    assert hourly["every"] == 3600 and hourly["next_due"].endswith(":00:00Z")
    for schedule in listed.values():
        due = datetime.fromisoformat(schedule["next_due"])
        assert before < due <= before + timedelta(days=1)
        assert schedule["next_key"] == f"schedule:{schedule['name']}:{schedule['next_due']}"
    assert not list(tmp_path.rglob("*.sock")) and not (tmp_path / "redis").exists()


def test_the_schedules_command_shows_switched_off_and_added_schedules(tmp_path: Path) -> None:
    env = {"SAGALINE_DATA_DIR": str(tmp_path), "SAGALINE_SCHEDULES_ENABLED": "false"}
    off = json.loads(sagaline("schedules", "--json", env=env).stdout)
    assert [(s["enabled"], s["next_due"]) for s in off] == [(False, None)] * 2
    added = sagaline("--app", "tests.support.app", "schedules",
                     env={"SAGALINE_DATA_DIR": str(tmp_path), QUICK_SCHEDULE: "listing"})
    assert result_lines(added.stdout, "t-quick-listing") == 1
    assert "every 0:00:02" in added.stdout and "t_quick" in added.stdout
    assert not list(tmp_path.rglob("*.sock"))


def result_lines(text: str, needle: str) -> int:
    return sum(needle in line for line in text.splitlines())


# -- the hourly shop report -----------------------------------------------------------------


def past_hour() -> datetime:
    """An hour in 2001 no other test's orders fall in."""
    return at("2001-01-01T00:00:00") + timedelta(hours=random.randrange(1, 8000))


def shop_in(backend: Backend, end: datetime) -> None:
    """Two orders in the hour before ``end`` (one paid, one refunded), one at ``end``."""
    with backend.db.session() as session:
        for minutes, cents, paid in ((-50, 1000, "captured"), (-1, 250, "refunded"),
                                     (0, 9999, "captured")):
            order = Order(saga_key=new_id(), customer_id="CUST-123", items=[],
                          total_cents=cents, created_at=end + timedelta(minutes=minutes))
            session.add(order)
            session.flush()
            session.add(Payment(saga_key=new_id(), customer_id="CUST-123", order_id=order.id,
                                amount_cents=cents, status=paid))


def reports_of(backend: Backend, run: SagaRun) -> list[ShopReport]:
    with backend.db.session() as session:
        return list(session.scalars(select(ShopReport).where(
            ShopReport.saga_key.like(f"{run.saga_id}:%"))))


def test_the_shop_report_counts_the_hour_up_to_its_end(backend: Backend) -> None:
    end = past_hour()
    shop_in(backend, end)
    run = backend.engine.start("shop_report", {"period_end": f"{end:%Y-%m-%dT%H:%M:%SZ}"}).wait(60)
    assert run.status is SagaStatus.COMPLETED, run.error
    sales = run.result["sales"]
    assert (sales["orders"], sales["order_cents"], sales["payments"],
            sales["payment_cents"]) == (2, 1250, 1, 1000)
    [report] = reports_of(backend, run)
    assert (report.id, report.orders, report.payments) == (run.result["report_id"], 2, 1)


def test_a_report_that_fails_at_its_last_step_leaves_no_row(backend: Backend,
                                                            faults: Any) -> None:
    faults.inject_fault("shop_report", "publish_report", times=None)
    run = backend.engine.start("shop_report", {"period_end": f"{past_hour():%Y-%m-%dT%H:%M:%SZ}"}
                               ).wait(60)
    assert run.status is SagaStatus.COMPENSATED, run.error
    assert run.compensations == ["delete_report"]
    assert reports_of(backend, run) == []


@pytest.mark.usefixtures("worker")
def test_a_firing_of_the_hourly_report_starts_it_once_for_the_hour_up_to_its_due_time(
        engine: Sagaline) -> None:
    """What the fire task does, twice for one due time (two beats): one report."""
    due = f"{past_hour():%Y-%m-%dT%H:%M:%SZ}"
    name = f"hourly-{uuid.uuid4().hex[:8]}"
    answers = [fire_once(engine, name, "shop_report", {"hours": 1},
                         due_input="period_end", due=due) for _ in range(2)]
    assert [a["outcome"] for a in answers] == ["started", "duplicate"]
    assert answers[0]["saga_id"] == answers[1]["saga_id"]
    run = engine.wait(answers[0]["saga_id"], 60)
    assert run.status is SagaStatus.COMPLETED, run.error
    moment = datetime.fromisoformat(due)
    assert datetime.fromisoformat(run.inputs["period_end"]) == moment == due_of(run)
    assert datetime.fromisoformat(run.result["sales"]["period_end"]) == moment
