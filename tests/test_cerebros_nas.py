"""Cerebros NAS end to end: real training on prefork workers (the training queue apart),
progress in the saga's record, a failure at any step or a cancel leaving nothing on disk,
and a trial whose worker is killed resuming from its checkpoint elsewhere.
"""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

import pytest
from sqlalchemy import select

from sagaline import RedisStore, Sagaline, SagaRun, SagaStatus, StepStatus
from tasks.db import Database
from tasks.nas.frontier import Point
from tasks.nas.models import Artifact, ModelRun, ModelVersion, Trial
from tasks.nas.storage import storage
from tasks.nas.training import load_artifact
from tests.conftest import kill_group, start_beat, start_worker
from tests.support.thunderline import Backend
from tests.test_cli import sagaline
from tests.test_event_bus import wait_for

SAGA = "cerebros_nas"
#: Ten architectures, small enough to train in seconds.
TEN = {"layers": [1, 2], "units": [16, 32, 64, 128, 256]}
SMALL = {"search_space": {"layers": [1, 2], "units": [32, 64]}, "max_trials": 3, "epochs": 3,
         "concurrency": 3}

pytestmark = pytest.mark.usefixtures("training_worker")


def run_row(db: Database, run_id: str) -> ModelRun:
    with db.session() as session:
        row = session.get(ModelRun, run_id)
        assert row is not None
        session.expunge(row)
        return row


def trials_of(db: Database, run_id: str) -> list[Trial]:
    with db.session() as session:
        rows = list(session.scalars(select(Trial).where(Trial.run_id == run_id)
                                    .order_by(Trial.index)))
        for row in rows:
            session.expunge(row)
        return rows


def run_id_of(run: SagaRun) -> str | None:
    created = run.step("create_model_run")
    return created.result["run_id"] if isinstance(created.result, dict) else None


def files_left(run_id: str) -> list[str]:
    folder = storage.run_dir(run_id)
    return [str(p) for p in folder.rglob("*")] if folder.exists() else []


def brute_force_frontier(points: list[Point]) -> set[str]:
    """Points no other is at least as good as on both counts and better on one."""
    return {p.id for p in points if not any(
        q.accuracy >= p.accuracy and q.params <= p.params
        and (q.accuracy > p.accuracy or q.params < p.params) for q in points)}


def test_a_search_of_ten_trials_registers_a_model_over_90_percent(backend: Backend) -> None:
    """Ten architectures trained in parallel on digits; the frontier is the brute-force one
    from the trials' recorded metrics; the best is registered as a version; its artifact
    loads (skops) and predicts.
    """
    run = backend.engine.start(SAGA, {"search_space": TEN, "max_trials": 10, "epochs": 12,
                                      "concurrency": 4}).wait(timeout=240)
    assert run.status is SagaStatus.COMPLETED, run.error
    run_id = run.result["run_id"]
    trials = trials_of(backend.db, run_id)
    assert len(trials) == 10 and {t.status for t in trials} == {"completed"}
    assert len({(t.architecture["layers"], t.architecture["units"]) for t in trials}) == 10
    points = [Point(t.id, t.metrics["val_accuracy"], t.metrics["params"]) for t in trials]
    pareto = run.step("analyze_pareto").result
    assert set(pareto["frontier"]) == brute_force_frontier(points)
    top = max(points, key=lambda p: (p.accuracy, -p.params))
    assert pareto["best"] == top.id and run.result["val_accuracy"] == top.accuracy
    assert run.result["val_accuracy"] >= 0.9
    with backend.db.session() as session:
        version = session.get(ModelVersion, run.result["version_id"])
        assert version is not None and version.status == "active"
        assert version.trial_id == top.id and version.run_id == run_id
        artifact = session.get(Artifact, version.artifact_id)
        assert artifact is not None
        path, digest = artifact.path, artifact.sha256
    model = load_artifact(storage.root / run_id / path.split(f"{run_id}/", 1)[1],
                          sha256=digest)
    assert model.predict([[0.0] * 64]).shape == (1,)
    assert run_row(backend.db, run_id).status == "completed"
    assert [s.name for s in run.steps][3:13] == [f"train_{i}" for i in range(10)]


FAILING = ["prepare_dataset", "create_model_run", "generate_proposals", "train_1",
           "collect_artifacts", "analyze_pareto", "persist_version", "emit_completion_event"]


@pytest.mark.parametrize("failing", FAILING)
def test_a_failure_at_any_step_marks_the_run_failed_and_leaves_no_file(
        engine: Sagaline, store: RedisStore, failing: str) -> None:
    store.inject_fault(SAGA, failing, message=f"{failing} is down")
    run = engine.start(SAGA, SMALL).wait(timeout=120)
    assert run.status is SagaStatus.COMPENSATED, run.error
    assert run.error is not None and f"{failing} is down" in run.error.message
    assert all(s.status is not StepStatus.RUNNING for s in run.steps)
    run_id = run_id_of(run)
    if failing in ("prepare_dataset", "create_model_run"):
        assert run_id is None
        return
    assert run_id is not None
    assert run_row(engine_db(), run_id).status == "failed"
    assert files_left(run_id) == []
    assert {t.status for t in trials_of(engine_db(), run_id)} <= {"failed", "cancelled"}
    with engine_db().session() as session:
        assert session.scalar(select(Artifact).where(Artifact.run_id == run_id)) is None or \
            failing in ("emit_completion_event",)
        versions = list(session.scalars(select(ModelVersion)
                                        .where(ModelVersion.run_id == run_id)))
        assert all(v.status == "retired" for v in versions)


def engine_db() -> Database:
    from tasks.db import database

    return database


def progress_of(engine: Sagaline, saga_id: str) -> dict[str, float]:
    """Per running training step, the epochs it reported done."""
    run = engine.get(saga_id)
    return {s.name: s.progress.done for s in run.steps
            if s.status is StepStatus.RUNNING and s.progress is not None}


#: Two trials of many long epochs: cancelled or killed long before they would end.
SLOW = {"search_space": {"layers": [2], "units": [128, 256]}, "max_trials": 2, "epochs": 60,
        "concurrency": 2, "passes_per_epoch": 30}


def test_cancel_during_training_stops_every_trial_within_an_epoch(engine: Sagaline) -> None:
    """``sagaline cancel`` while two trials train: each stops at the end of the epoch it
    was in, the run ends cancelled, nothing is left on disk; ``sagaline status`` showed
    the trials' progress meanwhile.
    """
    handle = engine.start(SAGA, SLOW)
    running = wait_for(lambda: (lambda p: p if len(p) == 2 and min(p.values()) >= 2 else None)(
        progress_of(engine, handle.saga_id)), timeout=60, what="both trials past epoch 2")
    shown = sagaline("status", handle.saga_id)
    assert "running" in shown.stdout and "/60" in shown.stdout, shown.stdout
    as_json = json.loads(sagaline("status", handle.saga_id, "--json").stdout)
    assert any(s["progress"] and s["progress"]["total"] == 60 for s in as_json["steps"])
    assert running
    cancelled_at = time.monotonic()
    assert sagaline("cancel", handle.saga_id).returncode == 0
    run = handle.wait(timeout=60)
    stopped_in = time.monotonic() - cancelled_at
    assert run.status is SagaStatus.CANCELLED, run.error
    requested = next(t.at.timestamp() for t in run.log if t.event == "saga.cancelling")
    run_id = run_id_of(run)
    assert run_id is not None
    latencies: list[float] = []
    epochs: list[float] = []
    for trial in trials_of(engine_db(), run_id):
        ended = trial.metrics["epoch_ended_at"]
        after = [at for at in ended if at > requested]
        # At most the epoch under way when the cancel came ends after it.
        assert len(after) <= 1, (trial.index, len(after), trial.epochs_done)
        epoch_s = (ended[-1] - ended[0]) / max(len(ended) - 1, 1)
        epochs.append(epoch_s)
        if after:
            latencies.append(after[0] - requested)
            assert after[0] - requested <= epoch_s * 1.5 + 0.5
        assert trial.epochs_done < 60 and trial.status == "cancelled"
    assert run_row(engine_db(), run_id).status == "cancelled"
    assert files_left(run_id) == []
    print(f"cancel to cancelled: {stopped_in:.2f} s; trials stopped "
          f"{', '.join(f'{s:.2f}' for s in latencies)} s after the request; epochs took "
          f"{', '.join(f'{s:.2f}' for s in epochs)} s")


@pytest.fixture
def training_paused(training_worker: subprocess.Popen[bytes]) -> Any:
    """The session's training worker stops taking trials for the test."""
    from tests.conftest import HOST, test_app

    test_app.control.cancel_consumer("training", destination=[f"training@{HOST}"],
                                     reply=True, timeout=5)
    time.sleep(1.5)
    yield
    test_app.control.add_consumer("training", destination=[f"training@{HOST}"], reply=True,
                                  timeout=5)


@pytest.mark.usefixtures("training_paused")
def test_a_trial_whose_worker_is_killed_resumes_from_its_checkpoint_elsewhere(
        engine: Sagaline) -> None:
    """A training worker SIGKILLed mid-trial: the trial runs again on another worker from
    its last checkpoint, not from scratch, and the saga completes.
    """
    doomed = start_worker("doomed", concurrency=2, queues="training")
    beat = start_beat()  # the recovery sweep notices the lost attempt
    try:
        handle = engine.start(SAGA, {**SLOW, "epochs": 12, "passes_per_epoch": 15})
        wait_for(lambda: (lambda p: p if p and min(p.values()) >= 3 else None)(
            progress_of(engine, handle.saga_id)), timeout=60, what="a trial past epoch 3")
        before = progress_of(engine, handle.saga_id)  # checkpoints only grow after this
        kill_group(doomed)
        rescuer = start_worker("rescuer", concurrency=2, queues="training")
        run = handle.wait(timeout=180)
        assert run.status is SagaStatus.COMPLETED, run.error
        resumed = {s.name: s.result for s in run.steps
                   if s.name.startswith("train_") and s.attempts > 1}
        checkpointed = {name: done for name, done in before.items() if done >= 3}
        assert checkpointed and set(checkpointed) <= set(resumed), (before, resumed)
        for name, done in checkpointed.items():
            assert resumed[name]["resumed_from"] >= done
            assert resumed[name]["epochs_trained"] <= 12 - done
        kill_group(rescuer)
    finally:
        kill_group(beat)
        if doomed.poll() is None:
            kill_group(doomed)


def test_a_second_copy_of_a_running_trial_waits_and_never_trains_twice(engine: Sagaline
                                                                       ) -> None:
    """What a visibility timeout shorter than a trial does, done on purpose: the trial's
    message is sent again while it trains. The copy finds the trial's lease held, waits,
    and drops once the trial completed: every epoch is trained once, on one attempt.
    """
    from sagaline.status import Role

    handle = engine.start(SAGA, {**SLOW, "max_trials": 2, "epochs": 6, "passes_per_epoch": 15})
    wait_for(lambda: progress_of(engine, handle.saga_id).get("train_0", 0) >= 1,
               timeout=60, what="train_0 training")
    saga = engine.driver.saga_of(handle.saga_id)
    for _ in range(2):
        engine.transport.send(saga, handle.saga_id, ["train_0"], Role.ACTION,
                              headers={"sagaline_saga_id": handle.saga_id})
    run = handle.wait(timeout=120)
    assert run.status is SagaStatus.COMPLETED, run.error
    assert run.step("train_0").attempts == 1
    trial = next(t for t in trials_of(engine_db(), run.result["run_id"]) if t.index == 0)
    ended = trial.metrics["epoch_ended_at"]
    assert len(ended) == 6 and ended == sorted(ended)
    assert trial.metrics["resumed_from"] == 0
    copies = wait_for(lambda: (lambda d: d if len(d) >= 2 else None)([
        t for t in engine.get(handle.saga_id).log
        if t.event == "action.duplicate" and t.step == "train_0"]),
        timeout=60, what="both copies dropped")
    assert len(copies) == 2
