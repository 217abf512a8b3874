"""The run-level steps of Cerebros NAS, and the undoing of each.

The dataset, the run, the proposals, the frontier, the registered version, the
announcement.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import func, select

from sagaline import Const, NonRetryableError, Parallel, Step, StepContext, add_steps, saga_task
from tasks.db import database, utcnow
from tasks.ids import new_uuid7

from .data import UnknownDatasetError, ensure_dataset
from .frontier import Point, best, pareto_frontier
from .models import (
    Artifact,
    ModelRun,
    ModelVersion,
    RunStatus,
    TrainingDataset,
    Trial,
    TrialStatus,
    VersionStatus,
)
from .search import SearchSpace, proposals
from .storage import remove_files, storage
from .trials import cached_split, discard, train

#: How long one trial may train before it is stopped.
TRIAL_TIME_LIMIT = timedelta(minutes=30)


class NoTrialCompletedError(NonRetryableError):
    """Raised when a run has no trained model to choose from."""


@saga_task("bolt.nas.prepare_dataset")
def prepare_dataset(ctx: StepContext, dataset_id: str, seed: int) -> dict[str, Any]:
    """Load and check the dataset (by id or name) and its seeded split."""
    with database.session() as session:
        row = session.get(TrainingDataset, dataset_id) or session.scalar(
            select(TrainingDataset).where(TrainingDataset.name == dataset_id))
        if row is None:
            try:
                row = ensure_dataset(session, dataset_id)
            except UnknownDatasetError as error:
                raise UnknownDatasetError(str(error), field="dataset_id") from error
        name, row_id = row.name, row.id
    split = cached_split(name, seed)
    return {"dataset_id": row_id, "name": name, "n_train": int(split.x_train.shape[0]),
            "n_validation": int(split.x_val.shape[0]), "n_classes": len(split.classes)}


@saga_task("bolt.nas.create_model_run")
def create_model_run(ctx: StepContext, dataset_id: str, search_space: dict[str, Any],
                     max_trials: int, epochs: int, seed: int) -> dict[str, Any]:
    """Record the run, pending (once per saga, whatever the redeliveries)."""
    with database.session() as session:
        run = session.scalar(select(ModelRun).where(ModelRun.saga_key == ctx.idempotency_key))
        if run is None:
            run = ModelRun(id=new_uuid7(), saga_key=ctx.idempotency_key, dataset_id=dataset_id,
                           status=RunStatus.PENDING, search_space=search_space,
                           max_trials=max_trials, epochs=epochs, seed=seed,
                           correlation_id=ctx.correlation_id)
            session.add(run)
        ctx.emit("ml.run.started", {"run_id": run.id, "dataset_id": dataset_id,
                                    "max_trials": max_trials})
        return {"run_id": run.id}


@saga_task("bolt.nas.mark_run_failed")
def mark_run_failed(ctx: StepContext, run_id: str) -> dict[str, Any]:
    """Mark the run failed (cancelled, when its saga was) and delete all its files.

    The run's record is kept.
    """
    status = RunStatus.CANCELLED if ctx.cancelled() else RunStatus.FAILED
    remove_files([storage.run_dir(run_id)])
    with database.session() as session:
        run = session.get(ModelRun, run_id)
        if run is not None:
            run.status, run.ended_at = status, run.ended_at or utcnow()
            for trial in session.scalars(select(Trial).where(
                    Trial.run_id == run_id, Trial.status.in_(
                        [TrialStatus.PENDING, TrialStatus.RUNNING]))):
                trial.status = TrialStatus.CANCELLED if status == "cancelled" else \
                    TrialStatus.FAILED
    ctx.emit("ml.run.failed", {"run_id": run_id, "status": str(status)})
    return {"run_id": run_id, "status": str(status)}


@saga_task("bolt.nas.generate_proposals")
def generate_proposals(ctx: StepContext, run_id: str, search_space: dict[str, Any],
                       max_trials: int, seed: int, concurrency: int,
                       passes_per_epoch: int) -> dict[str, Any]:
    """Choose the architectures to train and fan out.

    One training branch per proposal, ``concurrency`` of them at a time.
    """
    architectures = proposals(SearchSpace.model_validate(search_space), max_trials, seed)
    with database.session() as session:
        known = {t.index for t in session.scalars(select(Trial).where(Trial.run_id == run_id))}
        for index, architecture in enumerate(architectures):
            if index not in known:
                session.add(Trial(id=new_uuid7(), run_id=run_id, index=index,
                                  architecture=dict(architecture)))
    branches = [Step(f"train_{i}", train, compensation=discard,
                     args={"run_id": Const(run_id), "index": Const(i),
                           "passes_per_epoch": Const(passes_per_epoch)},
                     compensation_args={"run_id": Const(run_id), "index": Const(i)},
                     time_limit=TRIAL_TIME_LIMIT)
                for i in range(len(architectures))]
    result = {"trials": len(branches), "architectures": [dict(a) for a in architectures]}
    if len(branches) == 1:
        return add_steps(result, branches[0])
    return add_steps(result, Parallel("train", branches, max_concurrency=concurrency))


@saga_task("bolt.nas.collect_artifacts")
def collect_artifacts(ctx: StepContext, run_id: str) -> dict[str, Any]:
    """Every trained trial of the run, with its metrics and artifact."""
    with database.session() as session:
        rows = session.execute(select(Trial, Artifact).join(
            Artifact, Artifact.trial_id == Trial.id).where(
            Trial.run_id == run_id, Trial.status == TrialStatus.COMPLETED
        ).order_by(Trial.index)).all()
        trials = [{"trial_id": t.id, "index": t.index, "architecture": dict(t.architecture),
                   "val_accuracy": float(t.metrics["val_accuracy"]),
                   "params": int(t.metrics["params"]), "artifact_id": a.id} for t, a in rows]
    if not trials:
        raise NoTrialCompletedError(f"run {run_id} has no trained model", run_id=run_id)
    return {"trials": trials}


@saga_task("bolt.nas.analyze_pareto")
def analyze_pareto(ctx: StepContext, trials: list[dict[str, Any]]) -> dict[str, Any]:
    """The frontier of validation accuracy against parameter count, and its best point.

    The best is the most accurate point, then the smallest.
    """
    points = [Point(t["trial_id"], t["val_accuracy"], t["params"]) for t in trials]
    frontier = pareto_frontier(points)
    chosen = best(frontier)
    return {"frontier": [p.id for p in frontier], "best": chosen.id,
            "val_accuracy": chosen.accuracy, "params": chosen.params}


@saga_task("bolt.nas.persist_version")
def persist_version(ctx: StepContext, run_id: str, trial_id: str) -> dict[str, Any]:
    """Register the best model as the next version of the dataset's model.

    The seed only logged it.
    """
    with database.session() as session:
        existing = session.scalar(select(ModelVersion).where(ModelVersion.run_id == run_id))
        if existing is None:
            run = session.get(ModelRun, run_id)
            trial = session.get(Trial, trial_id)
            artifact = session.scalar(select(Artifact).where(Artifact.trial_id == trial_id))
            assert run is not None and trial is not None and artifact is not None
            dataset = session.get(TrainingDataset, run.dataset_id)
            name = f"cerebros-{dataset.name if dataset else run.dataset_id}"
            number = (session.scalar(select(func.max(ModelVersion.version))
                                     .where(ModelVersion.name == name)) or 0) + 1
            existing = ModelVersion(id=new_uuid7(), name=name, version=number, run_id=run_id,
                                    trial_id=trial_id, artifact_id=artifact.id,
                                    metrics={**trial.metrics,
                                             "architecture": dict(trial.architecture)})
            session.add(existing)
            session.flush()
        version = {"version_id": existing.id, "name": existing.name,
                   "version": existing.version, "run_id": run_id}
    ctx.emit("ml.model_version.registered", version)
    return version


@saga_task("bolt.nas.retire_version")
def retire_version(ctx: StepContext, version_id: str) -> dict[str, Any]:
    """Retire the version the run registered (its record is kept)."""
    with database.session() as session:
        version = session.get(ModelVersion, version_id)
        if version is not None:
            version.status = VersionStatus.RETIRED
    ctx.emit("ml.model_version.retired", {"version_id": version_id})
    return {"version_id": version_id, "status": "retired"}


@saga_task("bolt.nas.emit_completion_event")
def emit_completion_event(ctx: StepContext, run_id: str, version_id: str, val_accuracy: float,
                          frontier: list[str], trials: int) -> dict[str, Any]:
    """Close the run and announce it: ``ml.run.completed``.

    The seed's ``ml.run.complete`` was off the taxonomy.
    """
    with database.session() as session:
        run = session.get(ModelRun, run_id)
        if run is not None:
            run.status, run.ended_at = RunStatus.COMPLETED, run.ended_at or utcnow()
    payload = {"run_id": run_id, "version_id": version_id, "val_accuracy": val_accuracy,
               "trials": trials, "frontier": frontier}
    ctx.emit("ml.run.completed", payload)
    return payload
