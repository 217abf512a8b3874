"""NAS tables: datasets, runs of a search, their trials, trained artifacts, model versions.

A run searches one dataset: it has a trial per proposed architecture; a finished trial's
trained model is an artifact; the best one of a run becomes a version of a named model.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from tasks.db import Base, utcnow


class RunStatus(StrEnum):
    """Where a run of a search is."""

    #: Recorded, no trial started yet.
    PENDING = "pending"
    #: Its trials are being trained.
    RUNNING = "running"
    #: Every trial is over and the run's results are kept.
    COMPLETED = "completed"
    #: It failed; ``error`` says why.
    FAILED = "failed"
    #: It was stopped (its saga was undone) before it completed.
    CANCELLED = "cancelled"


class TrialStatus(StrEnum):
    """Where the training of one proposed architecture is."""

    #: Proposed, not started.
    PENDING = "pending"
    #: Being trained; ``epochs_done`` counts the epochs checkpointed so far.
    RUNNING = "running"
    #: Trained for every epoch; ``metrics`` holds its results.
    COMPLETED = "completed"
    #: Its training failed.
    FAILED = "failed"
    #: Stopped before it completed.
    CANCELLED = "cancelled"


class VersionStatus(StrEnum):
    """Whether a model version is in use."""

    #: Serving: the version to use for its model name.
    ACTIVE = "active"
    #: Replaced or withdrawn; kept for the record.
    RETIRED = "retired"


class TrainingDataset(Base):
    """A dataset runs can search on, by name (``digits``) and where it comes from."""

    __tablename__ = "nas_datasets"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    """A UUIDv7."""
    name: Mapped[str] = mapped_column(String(100), unique=True)
    source: Mapped[str] = mapped_column(String(200))
    """Where its data comes from, like ``sklearn:digits``."""
    n_samples: Mapped[int] = mapped_column(Integer)
    n_features: Mapped[int] = mapped_column(Integer)
    n_classes: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ModelRun(Base):
    """One search: a dataset, a search space, and how long to train each architecture."""

    __tablename__ = "nas_runs"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    """A UUIDv7; names the run's folder of files too."""
    saga_key: Mapped[str] = mapped_column(String(200), unique=True)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("nas_datasets.id"))
    status: Mapped[str] = mapped_column(String(20), default=RunStatus.PENDING)
    """A :class:`RunStatus`."""
    search_space: Mapped[dict[str, Any]] = mapped_column(JSON)
    """A :class:`tasks.nas.search.SearchSpace` as JSON: ``{"layers": [...], "units": [...]}``."""
    max_trials: Mapped[int] = mapped_column(Integer)
    epochs: Mapped[int] = mapped_column(Integer)
    seed: Mapped[int] = mapped_column(Integer)
    correlation_id: Mapped[str] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Trial(Base):
    """The training of one proposed architecture in a run; ``index`` orders them from 0."""

    __tablename__ = "nas_trials"
    __table_args__ = (UniqueConstraint("run_id", "index"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    """A UUIDv7."""
    run_id: Mapped[str] = mapped_column(ForeignKey("nas_runs.id"))
    index: Mapped[int] = mapped_column(Integer)
    architecture: Mapped[dict[str, int]] = mapped_column(JSON)
    """``{"layers": int, "units": int}``: that many hidden layers of that many units."""
    status: Mapped[str] = mapped_column(String(20), default=TrialStatus.PENDING)
    """A :class:`TrialStatus`."""
    epochs_done: Mapped[int] = mapped_column(Integer, default=0)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """``val_accuracy``, ``params``, ``train_loss`` and the per-epoch ``history``."""
    checkpoint_path: Mapped[str | None] = mapped_column(String(1000), nullable=True)


class Artifact(Base):
    """A completed trial's trained model, saved as a skops file."""

    __tablename__ = "nas_artifacts"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    """A UUIDv7."""
    run_id: Mapped[str] = mapped_column(ForeignKey("nas_runs.id"), index=True)
    trial_id: Mapped[str] = mapped_column(ForeignKey("nas_trials.id"), unique=True)
    path: Mapped[str] = mapped_column(String(1000))
    format: Mapped[str] = mapped_column(String(20), default="skops")
    bytes: Mapped[int] = mapped_column(BigInteger)
    """The file's size."""
    sha256: Mapped[str] = mapped_column(String(64))
    """The file's SHA-256, in hex: check it before loading the file."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ModelVersion(Base):
    """A numbered version of a named model: the artifact a run picked as its best."""

    __tablename__ = "nas_model_versions"
    __table_args__ = (UniqueConstraint("name", "version"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    """A UUIDv7."""
    name: Mapped[str] = mapped_column(String(200))
    version: Mapped[int] = mapped_column(Integer)
    """1 for a name's first version, then one more each time."""
    run_id: Mapped[str] = mapped_column(ForeignKey("nas_runs.id"), index=True)
    trial_id: Mapped[str] = mapped_column(ForeignKey("nas_trials.id"))
    artifact_id: Mapped[str] = mapped_column(ForeignKey("nas_artifacts.id"))
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(20), default=VersionStatus.ACTIVE)
    """A :class:`VersionStatus`."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
