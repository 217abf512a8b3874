"""The training branches of a NAS run: one saga step per proposed architecture.

Each trains a real model epoch by epoch, reports its progress (the saga's record, telemetry,
Flower), checkpoints every epoch and stops at the end of the epoch when its saga is
cancelled or rolling back. A trial whose worker died resumes from its last checkpoint on
the next attempt; the engine's lease makes sure no two attempts of one trial run at once.
"""

from __future__ import annotations

import time
from functools import lru_cache
from typing import Any

from sqlalchemy import select
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from sagaline import SagaCancelledError, StepContext, saga_task
from tasks.db import database, utcnow
from tasks.ids import new_uuid7

from .data import Split, load_dataset
from .models import (
    Artifact,
    ModelRun,
    ModelVersion,
    RunStatus,
    TrainingDataset,
    Trial,
    TrialStatus,
)
from .search import Architecture
from .storage import remove_files, storage
from .training import EpochMetrics, TrainingStopped, save_artifact, train_trial

TRAIN_TASK = "bolt.nas.train_trial"

#: The BLAS threads one trial may use (workers scale by processes, one per core).
TRIAL_THREADS = 1
"""The training task's name: config routes it to the training queue."""


@lru_cache(maxsize=4)
def cached_split(name: str, seed: int) -> Split:
    """The dataset split of a run, loaded once per worker process."""
    return load_dataset(name, seed)


def _trial(run_id: str, index: int) -> tuple[Trial, ModelRun, str]:
    with database.session() as session:
        trial = session.scalar(select(Trial).where(Trial.run_id == run_id, Trial.index == index))
        run = session.get(ModelRun, run_id)
        if trial is None or run is None:
            raise SagaCancelledError(f"trial {index} of run {run_id} is not recorded")
        dataset = session.get(TrainingDataset, run.dataset_id)
        assert dataset is not None
        trial.status = TrialStatus.RUNNING
        run.status = RunStatus.RUNNING
        return trial, run, dataset.name


@saga_task(TRAIN_TASK)
def train(ctx: StepContext, run_id: str, index: int, passes_per_epoch: int = 1
          ) -> dict[str, Any]:
    """Train trial ``index`` of the run, from its checkpoint if it has one; save the model."""
    trial, run, dataset = _trial(run_id, index)
    folder = storage.trial_dir(run_id, index)
    architecture = Architecture(layers=trial.architecture["layers"],
                                units=trial.architecture["units"])

    ended: list[float] = list(trial.metrics.get("epoch_ended_at", []))

    def on_epoch(epoch: int, epochs: int, metrics: EpochMetrics) -> None:
        ended.append(round(time.time(), 3))
        ctx.progress(epoch, epochs, val_accuracy=round(metrics["val_accuracy"], 4),
                     train_loss=round(metrics["train_loss"], 4))
        with database.session() as session:
            row = session.get(Trial, trial.id)
            if row is not None:
                row.epochs_done, row.checkpoint_path = epoch, str(folder)
                row.metrics = {**dict(metrics), "epoch_ended_at": list(ended)}

    try:
        # One trial, one core: a worker runs one process per core, and BLAS threads on top
        # of them only fight (measured: 2 processes 0.61x as fast as 1, 1.65x once limited).
        with threadpool_limits(limits=TRIAL_THREADS):
            result = train_trial(cached_split(dataset, run.seed), architecture,
                                 epochs=run.epochs, seed=run.seed, index=index,
                                 checkpoint_dir=folder, on_epoch=on_epoch,
                                 should_stop=ctx.cancelled, passes_per_epoch=passes_per_epoch)
    except TrainingStopped as stopped:
        raise SagaCancelledError(
            f"trial {index} stopped after epoch {stopped.epochs_done}: its saga was "
            "cancelled or is rolling back") from stopped
    size, digest = save_artifact(result.model, storage.model_path(run_id, index))
    with database.session() as session:
        artifact = session.scalar(select(Artifact).where(Artifact.trial_id == trial.id))
        if artifact is None:
            artifact = Artifact(id=new_uuid7(), run_id=run_id, trial_id=trial.id, path="",
                                bytes=0, sha256="")
            session.add(artifact)
        artifact.path = str(storage.model_path(run_id, index))
        artifact.bytes, artifact.sha256, artifact.created_at = size, digest, utcnow()
        row = session.get(Trial, trial.id)
        assert row is not None
        row.status, row.epochs_done = TrialStatus.COMPLETED, result.epochs_done
        row.metrics = {**result.metrics, "resumed_from": result.resumed_from,
                       "epoch_ended_at": list(ended)}
        artifact_id = artifact.id
    ctx.emit("ml.trial.completed", {"run_id": run_id, "trial_id": trial.id,
                                    "val_accuracy": result.val_accuracy,
                                    "params": result.params,
                                    "resumed_from": result.resumed_from})
    return {"trial_id": trial.id, "index": index, "val_accuracy": result.val_accuracy,
            "params": result.params, "artifact_id": artifact_id,
            "resumed_from": result.resumed_from,
            "epochs_trained": result.epochs_done - result.resumed_from}


@saga_task("bolt.nas.discard_trial")
def discard(ctx: StepContext, run_id: str, index: int) -> dict[str, Any]:
    """Delete the trial's model and checkpoints, and its artifact's row.

    The trial's row stays, marked cancelled or failed.
    """
    removed = remove_files([storage.trial_dir(run_id, index)])
    with database.session() as session:
        trial = session.scalar(select(Trial).where(Trial.run_id == run_id, Trial.index == index))
        if trial is None:
            return {"run_id": run_id, "index": index, "removed": len(removed)}
        artifact = session.scalar(select(Artifact).where(Artifact.trial_id == trial.id))
        kept = artifact is not None and session.scalar(
            select(ModelVersion.id).where(ModelVersion.artifact_id == artifact.id)) is not None
        if artifact is not None and not kept:  # a retired version keeps its artifact's row
            session.delete(artifact)
        trial.status = TrialStatus.CANCELLED if ctx.cancelled() else TrialStatus.FAILED
        trial.checkpoint_path = None
        trial_id = trial.id
    ctx.emit("ml.trial.discarded", {"run_id": run_id, "trial_id": trial_id})
    return {"run_id": run_id, "index": index, "removed": len(removed)}
