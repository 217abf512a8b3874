"""Training one architecture, an epoch at a time, resumable from its last checkpoint.

The model is scikit-learn's ``MLPClassifier``, trained with ``partial_fit``. After every
epoch the model, the epoch's number and the accuracies so far are written to the trial's
checkpoint, atomically: a process killed at any moment leaves the previous checkpoint or the
new one, never half of one. Training the same trial again resumes after the checkpoint's
epoch, and with a fixed random state it ends with the same model as training straight
through.

Models are saved with skops, never pickle: loading a file builds only the types listed in
:data:`TRUSTED_TYPES` or trusted by skops itself (scikit-learn's estimators, NumPy arrays),
and refuses a file holding any other.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypedDict

import skops.io as sio  # type: ignore[import-untyped]
from sklearn.neural_network import MLPClassifier  # type: ignore[import-untyped]

from sagaline import NonRetryableError
from tasks.nas.data import Split
from tasks.nas.search import Architecture
from tasks.nas.storage import CHECKPOINT_FILE

TRUSTED_TYPES = frozenset({
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
    "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
})
"""The types skops does not trust by itself that a NAS model file may hold: the optimizer
whose state a checkpoint keeps so training resumes where it stopped."""

CHECKPOINT_FORMAT = 1
"""The layout of a checkpoint's contents; a checkpoint of another one is refused."""


class ArtifactRefusedError(NonRetryableError):
    """Raised when a model or checkpoint file is unreadable, altered or holds untrusted types."""


class CheckpointMismatchError(NonRetryableError):
    """Raised when a trial's checkpoint was made for another architecture or seed."""


class TrainingStopped(Exception):  # noqa: N818 - a requested stop, not a failure
    """Raised when ``should_stop`` asked training to stop after an epoch; it can resume."""

    def __init__(self, epochs_done: int, checkpoint: Path) -> None:
        self.epochs_done = epochs_done
        """The epochs trained and checkpointed; training again resumes after the last."""
        self.checkpoint = checkpoint
        """The checkpoint holding the model after epoch ``epochs_done``."""
        super().__init__(f"training stopped after epoch {epochs_done}; "
                         f"its checkpoint is {checkpoint}")


class EpochMetrics(TypedDict):
    """What one epoch of training measured."""

    val_accuracy: float
    """The share of validation samples the model classifies right."""
    train_loss: float
    """The training loss of the epoch's last pass."""
    params: int
    """The model's number of weights and biases."""


class EpochCallback(Protocol):
    """Told after each epoch is checkpointed: its number (from 1), of how many, its metrics."""

    def __call__(self, epoch: int, epochs: int, metrics: EpochMetrics, /) -> None:
        """Report progress (heartbeat, progress events); raising aborts training."""


class StopCheck(Protocol):
    """Asked after each epoch but the last whether training should stop there."""

    def __call__(self) -> bool:
        """True to stop (a cancelled run); the epoch is checkpointed already."""


@dataclass(frozen=True)
class TrialResult:
    """A trained architecture: its accuracy, its size, and how training went."""

    val_accuracy: float
    """The validation accuracy after the last epoch."""
    params: int
    """The number of weights and biases: the model's size."""
    train_loss: float
    """The training loss of the last epoch."""
    epochs_done: int
    resumed_from: int
    """The checkpoint's epoch training resumed after, or 0 when it started afresh."""
    history: list[float]
    """The validation accuracy after each epoch, from epoch 1."""
    model: MLPClassifier = field(repr=False)

    @property
    def metrics(self) -> dict[str, Any]:
        """The results as JSON, for a trial's ``metrics`` column."""
        return {"val_accuracy": self.val_accuracy, "params": self.params,
                "train_loss": self.train_loss, "epochs_done": self.epochs_done,
                "history": list(self.history)}


@dataclass
class _Progress:
    model: MLPClassifier
    epoch: int = 0
    history: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)


def count_params(model: MLPClassifier) -> int:
    """The number of weights and biases of a fitted model."""
    return int(sum(w.size for w in model.coefs_) + sum(b.size for b in model.intercepts_))


def train_trial(split: Split, architecture: Architecture, *, epochs: int, seed: int,
                index: int, checkpoint_dir: Path, on_epoch: EpochCallback | None = None,
                should_stop: StopCheck | None = None,
                passes_per_epoch: int = 1) -> TrialResult:
    """Train ``architecture`` on ``split`` for ``epochs``, resuming from a checkpoint.

    Each epoch runs ``passes_per_epoch`` passes of ``partial_fit`` over the training
    samples, measures the validation accuracy, writes the checkpoint, calls ``on_epoch``,
    then (but after the last epoch) asks ``should_stop``. A checkpoint already in
    ``checkpoint_dir`` is resumed from: only the epochs after its own are trained, and one
    of ``epochs`` or more is returned as it is.

    Args:
        split: the training and validation samples.
        architecture: how many hidden layers, of how many units.
        epochs: how many epochs in all, those of a resumed checkpoint included.
        seed: the run's seed; the trial's random state is ``seed + index``.
        index: the trial's index in its run.
        checkpoint_dir: the trial's folder (made if missing), holding its checkpoint.
        on_epoch: told of each epoch trained.
        should_stop: asked whether to stop after each epoch.
        passes_per_epoch: passes over the training samples in an epoch (1 or more).

    Returns:
        The trained model and its metrics.

    Raises:
        TrainingStopped: when ``should_stop`` said so; the checkpoint holds the last epoch.
        CheckpointMismatchError: when the checkpoint is another architecture's or seed's.
        ArtifactRefusedError: when the checkpoint is unreadable or holds untrusted types.
    """
    _check_training(architecture, epochs, passes_per_epoch)
    random_state = seed + index
    checkpoint = checkpoint_dir / CHECKPOINT_FILE
    progress = _resume(checkpoint_dir, architecture, random_state) or _Progress(MLPClassifier(
        hidden_layer_sizes=(architecture["units"],) * architecture["layers"],
        random_state=random_state))
    resumed_from = progress.epoch
    model = progress.model
    for epoch in range(progress.epoch + 1, epochs + 1):
        for _ in range(passes_per_epoch):
            first = not hasattr(model, "classes_")
            model.partial_fit(split.x_train, split.y_train,
                              classes=split.classes if first else None)
        progress.epoch = epoch
        progress.history.append(float(model.score(split.x_val, split.y_val)))
        progress.losses.append(float(model.loss_))
        _save_checkpoint(checkpoint, progress, architecture, random_state)
        if on_epoch is not None:
            on_epoch(epoch, epochs, EpochMetrics(val_accuracy=progress.history[-1],
                                                 train_loss=progress.losses[-1],
                                                 params=count_params(model)))
        if epoch < epochs and should_stop is not None and should_stop():
            raise TrainingStopped(epoch, checkpoint)
    return TrialResult(val_accuracy=progress.history[-1], params=count_params(model),
                       train_loss=progress.losses[-1], epochs_done=progress.epoch,
                       resumed_from=resumed_from, history=list(progress.history), model=model)


def _check_training(architecture: Architecture, epochs: int, passes_per_epoch: int) -> None:
    for key in ("layers", "units"):
        value = architecture.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"architecture {dict(architecture)} needs {key!r} as a whole "
                             "number of 1 or more, like {'layers': 2, 'units': 64}")
    if epochs < 1:
        raise ValueError(f"epochs is {epochs}; train for 1 epoch or more")
    if passes_per_epoch < 1:
        raise ValueError(f"passes_per_epoch is {passes_per_epoch}; make it 1 or more")


@dataclass(frozen=True)
class Checkpoint:
    """A trial's model after its last finished epoch, and what it was made for."""

    epoch: int
    """The epochs trained so far."""
    history: list[float]
    """The validation accuracy after each epoch, from epoch 1."""
    losses: list[float]
    """The training loss of each epoch."""
    architecture: dict[str, int]
    random_state: int
    model: MLPClassifier = field(repr=False)


def load_checkpoint(checkpoint_dir: Path) -> Checkpoint | None:
    """The checkpoint in a trial's folder, or None when it has none.

    Raises:
        ArtifactRefusedError: when the checkpoint is unreadable, holds untrusted types or is
            not a checkpoint of this library's format.
    """
    path = checkpoint_dir / CHECKPOINT_FILE
    if not path.exists():
        return None
    saved = _load_trusted(path)
    if not (isinstance(saved, dict) and saved.get("format") == CHECKPOINT_FORMAT
            and isinstance(saved.get("model"), MLPClassifier)
            and isinstance(saved.get("epoch"), int)
            and isinstance(saved.get("random_state"), int)
            and isinstance(saved.get("architecture"), dict)
            and len(saved.get("history", ())) == len(saved.get("losses", ())) == saved["epoch"]):
        raise ArtifactRefusedError(
            f"{path} is not a NAS checkpoint of format {CHECKPOINT_FORMAT}; delete it to "
            "train the trial afresh", path=str(path))
    return Checkpoint(epoch=saved["epoch"], history=[float(a) for a in saved["history"]],
                      losses=[float(loss) for loss in saved["losses"]],
                      architecture=dict(saved["architecture"]),
                      random_state=saved["random_state"], model=saved["model"])


def _resume(checkpoint_dir: Path, architecture: Architecture,
            random_state: int) -> _Progress | None:
    # A writer killed mid-write leaves its temporary file; the checkpoint itself is whole.
    for partial in checkpoint_dir.glob(f".{CHECKPOINT_FILE}.*.partial"):
        partial.unlink(missing_ok=True)
    saved = load_checkpoint(checkpoint_dir)
    if saved is None:
        return None
    if (saved.architecture, saved.random_state) != (dict(architecture), random_state):
        raise CheckpointMismatchError(
            f"{checkpoint_dir / CHECKPOINT_FILE} holds architecture {saved.architecture} with "
            f"random state {saved.random_state}, not {dict(architecture)} with "
            f"{random_state}; delete it to train this trial afresh, or use another folder",
            path=str(checkpoint_dir / CHECKPOINT_FILE))
    return _Progress(model=saved.model, epoch=saved.epoch, history=list(saved.history),
                     losses=list(saved.losses))


def _save_checkpoint(checkpoint: Path, progress: _Progress, architecture: Architecture,
                     random_state: int) -> None:
    contents = {"format": CHECKPOINT_FORMAT, "model": progress.model, "epoch": progress.epoch,
                "history": progress.history, "losses": progress.losses,
                "architecture": dict(architecture), "random_state": random_state}
    _write_atomically(checkpoint, sio.dumps(contents))


def save_artifact(model: MLPClassifier, path: Path) -> tuple[int, str]:
    """Save a trained model to ``path`` in skops format, atomically.

    Returns:
        The file's size in bytes and its SHA-256 in hex, for the artifact's row.
    """
    data: bytes = sio.dumps(model)
    _write_atomically(path, data)
    return len(data), hashlib.sha256(data).hexdigest()


def load_artifact(path: Path, *, sha256: str | None = None) -> MLPClassifier:
    """The model saved at ``path``, built only from trusted types.

    Args:
        path: a file :func:`save_artifact` wrote.
        sha256: the file's expected SHA-256 (from its artifact row); checked when given.

    Raises:
        ArtifactRefusedError: when the file is missing or unreadable, differs from
            ``sha256``, holds a type that is not trusted, or is not a model.
    """
    model = _load_trusted(path, sha256=sha256)
    if not isinstance(model, MLPClassifier):
        raise ArtifactRefusedError(f"{path} holds a {type(model).__name__}, not a model",
                                   path=str(path))
    return model


def _load_trusted(path: Path, *, sha256: str | None = None) -> object:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ArtifactRefusedError(f"{path} cannot be read ({error}); train the trial "
                                   "again", path=str(path)) from error
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise ArtifactRefusedError(
            f"{path} has SHA-256 {hashlib.sha256(data).hexdigest()}, not the recorded "
            f"{sha256}: it was altered or replaced; train the trial again", path=str(path))
    try:
        found: list[str] = sio.get_untrusted_types(data=data)
    except Exception as error:  # any damage: a truncated zip, bad JSON, a missing entry
        raise ArtifactRefusedError(f"{path} is not a readable skops file ({error}); delete "
                                   "it and train again", path=str(path)) from error
    refused = sorted(set(found) - TRUSTED_TYPES)
    if refused:
        raise ArtifactRefusedError(
            f"{path} holds types that are not trusted: {', '.join(refused)}; only a file "
            "this library wrote can be loaded", path=str(path), untrusted=refused)
    try:
        return sio.loads(data, trusted=found)
    except Exception as error:
        raise ArtifactRefusedError(f"{path} could not be loaded ({error}); delete it and "
                                   "train again", path=str(path)) from error


def _write_atomically(path: Path, data: bytes) -> None:
    # Written beside the file, synced, then renamed over it: a process killed at any point
    # leaves the old file or the new one, and a machine that crashes keeps what was renamed.
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                                         suffix=".partial")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
