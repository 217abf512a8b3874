"""The datasets a search can run on: bundled with scikit-learn, so nothing is downloaded.

``digits`` is scikit-learn's 1,797 8x8 images of handwritten digits: 64 pixel features,
each 0-16, scaled to [0, 1]; ten classes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from sklearn.datasets import load_digits  # type: ignore[import-untyped]
from sklearn.model_selection import train_test_split  # type: ignore[import-untyped]
from sqlalchemy import select
from sqlalchemy.orm import Session

from sagaline import NonRetryableError
from tasks.db import database
from tasks.ids import new_uuid7
from tasks.nas.models import TrainingDataset

DEFAULT_DATASET = "digits"
"""The dataset registered in every database, and searched when a run names none."""

VALIDATION_FRACTION = 0.25
"""The share of samples kept out of training to measure accuracy on."""

Features = NDArray[np.float64]
Labels = NDArray[np.int64]


class UnknownDatasetError(NonRetryableError):
    """Raised when a dataset name is not one of the bundled datasets."""


@dataclass(frozen=True)
class Split:
    """A dataset split into training and validation samples, stratified by class."""

    name: str
    x_train: Features
    y_train: Labels
    x_val: Features
    y_val: Labels
    classes: Labels
    """Every class label, sorted (training needs them all on its first batch)."""

    @property
    def n_features(self) -> int:
        """The number of features of a sample."""
        return int(self.x_train.shape[1])


@dataclass(frozen=True)
class _Bundled:
    source: str
    load: Callable[[], tuple[Features, Labels]]


def _digits() -> tuple[Features, Labels]:
    bunch = load_digits()
    # Pixels are 0-16 intensities: a fixed scale keeps every split on the same one.
    return np.asarray(bunch.data, dtype=np.float64) / 16.0, np.asarray(bunch.target,
                                                                       dtype=np.int64)


DATASETS: dict[str, _Bundled] = {"digits": _Bundled("sklearn:digits", _digits)}
"""The datasets that can be searched, by name."""


def _bundled(name: str) -> _Bundled:
    try:
        return DATASETS[name]
    except KeyError:
        known = ", ".join(sorted(DATASETS))
        raise UnknownDatasetError(
            f"there is no dataset {name!r}; use one of: {known}", dataset=name,
            known=sorted(DATASETS)) from None


def load_dataset(name: str, seed: int) -> Split:
    """The named dataset, features in [0, 1], split 75/25 with the classes in proportion.

    Args:
        name: a dataset of :data:`DATASETS`, like ``"digits"``.
        seed: picks the split; the same seed gives the same split.

    Returns:
        The training and validation samples.

    Raises:
        UnknownDatasetError: when ``name`` is not a bundled dataset.
    """
    bundled = _bundled(name)
    x, y = bundled.load()
    x_train, x_val, y_train, y_val = train_test_split(
        x, y, test_size=VALIDATION_FRACTION, stratify=y, random_state=seed)
    return Split(name=name, x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val,
                 classes=np.unique(y))


def ensure_dataset(session: Session, name: str = DEFAULT_DATASET) -> TrainingDataset:
    """The dataset's row, registered first if it is not yet (calling again changes nothing).

    Raises:
        UnknownDatasetError: when ``name`` is not a bundled dataset.
    """
    bundled = _bundled(name)
    row = session.scalar(select(TrainingDataset).where(TrainingDataset.name == name))
    if row is None:
        x, y = bundled.load()
        row = TrainingDataset(id=new_uuid7(), name=name, source=bundled.source,
                              n_samples=int(x.shape[0]), n_features=int(x.shape[1]),
                              n_classes=len(np.unique(y)))
        session.add(row)
        session.flush()
    return row


@database.seeder
def seed_datasets(session: Session) -> None:
    """Register the default dataset, ``digits``."""
    ensure_dataset(session, DEFAULT_DATASET)
