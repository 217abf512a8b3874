"""The Cerebros NAS library on real data: scikit-learn's bundled digits, real training, real
skops files, a real SQLite database. No Redis, no worker: these are plain functions.
"""

from __future__ import annotations

import itertools
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import skops.io as sio
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from sqlalchemy import func, inspect, select
from sqlalchemy.exc import IntegrityError

from sagaline import NonRetryableError
from tasks.db import Database, alembic_config
from tasks.ids import new_uuid7
from tasks.nas.data import (
    DATASETS,
    Split,
    UnknownDatasetError,
    ensure_dataset,
    load_dataset,
)
from tasks.nas.frontier import Point, best, pareto_frontier
from tasks.nas.models import (
    Artifact,
    ModelRun,
    ModelVersion,
    RunStatus,
    TrainingDataset,
    Trial,
    TrialStatus,
)
from tasks.nas.search import SearchSpace, proposals
from tasks.nas.storage import CHECKPOINT_FILE, NasStorage, remove_files
from tasks.nas.training import (
    ArtifactRefusedError,
    CheckpointMismatchError,
    EpochMetrics,
    TrainingStopped,
    load_artifact,
    load_checkpoint,
    save_artifact,
    train_trial,
)
from tests.conftest import ROOT

SMALL = {"layers": 2, "units": 64}
NAS_TABLES = {"nas_datasets", "nas_runs", "nas_trials", "nas_artifacts", "nas_model_versions"}


@pytest.fixture(scope="module")
def digits() -> Split:
    return load_dataset("digits", seed=0)


class Epochs:
    """Records every ``on_epoch`` call, and can ask training to stop after a given epoch."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.seen: list[int] = []
        self.metrics: list[EpochMetrics] = []
        self.stop_after = stop_after

    def __call__(self, epoch: int, epochs: int, metrics: EpochMetrics) -> None:
        self.seen.append(epoch)
        self.metrics.append(metrics)

    def should_stop(self) -> bool:
        return self.stop_after is not None and self.seen[-1] >= self.stop_after


# --- search -------------------------------------------------------------------------------

spaces = st.builds(
    SearchSpace,
    layers=st.lists(st.integers(1, 32), min_size=1, max_size=16, unique=True),
    units=st.lists(st.integers(1, 4096), min_size=1, max_size=16, unique=True),
)


@settings(max_examples=200, deadline=None)
@given(space=spaces, max_trials=st.integers(1, 300), seed=st.integers(0, 2**32))
def test_proposals_are_deterministic_distinct_bounded_and_ordered(
        space: SearchSpace, max_trials: int, seed: int) -> None:
    chosen = proposals(space, max_trials, seed)
    every = {(a, b) for a, b in itertools.product(space.layers, space.units)}
    pairs = [(p["layers"], p["units"]) for p in chosen]
    assert len(chosen) == min(max_trials, len(every))
    assert len(set(pairs)) == len(pairs) and set(pairs) <= every
    assert pairs == sorted(pairs)
    assert proposals(space, max_trials, seed) == chosen
    if max_trials >= len(every):
        assert set(pairs) == every


def test_proposals_depend_on_the_seed() -> None:
    """Given a 16x16 space and 5 trials, different seeds pick different architectures."""
    space = SearchSpace(layers=list(range(1, 17)), units=list(range(1, 17)))
    picks = {tuple((p["layers"], p["units"]) for p in proposals(space, 5, seed))
             for seed in range(10)}
    assert len(picks) > 1


@pytest.mark.parametrize("layers, units, wrong", [
    ([], [64], "at least 1 item"),
    ([0], [64], "greater than 0"),
    ([2], [-1], "greater than 0"),
    (list(range(1, 18)), [64], "at most 16 items"),
    ([2, 2], [64], "more than once"),
    ([2], [10_000], "less than or equal to 4096"),
    (["2"], [64], "valid integer"),
])
def test_a_search_space_refuses_bad_values_saying_what_is_wrong(
        layers: list[int], units: list[int], wrong: str) -> None:
    with pytest.raises(ValidationError, match=wrong):
        SearchSpace(layers=layers, units=units)


def test_proposals_refuse_fewer_than_one_trial() -> None:
    with pytest.raises(ValueError, match="at least 1 trial"):
        proposals(SearchSpace(layers=[1], units=[8]), 0, seed=1)


# --- data ---------------------------------------------------------------------------------

def test_digits_is_split_75_25_stratified_and_scaled_to_the_unit_range() -> None:
    split = load_dataset("digits", seed=3)
    assert len(split.y_train) + len(split.y_val) == 1797 and len(split.y_val) == 450
    assert split.n_features == 64 and list(split.classes) == list(range(10))
    for x in (split.x_train, split.x_val):
        assert x.min() >= 0.0 and x.max() <= 1.0 and x.max() == 1.0
    train_share = np.bincount(split.y_train) / len(split.y_train)
    val_share = np.bincount(split.y_val) / len(split.y_val)
    assert np.abs(train_share - val_share).max() < 0.01
    again, other = load_dataset("digits", seed=3), load_dataset("digits", seed=4)
    assert np.array_equal(again.y_val, split.y_val) and np.array_equal(again.x_val, split.x_val)
    assert not np.array_equal(other.x_val, split.x_val)


def test_an_unknown_dataset_is_refused_for_good_naming_the_known_ones() -> None:
    with pytest.raises(UnknownDatasetError, match=r"'mnist'.*digits") as refused:
        load_dataset("mnist", seed=0)
    assert isinstance(refused.value, NonRetryableError)
    assert refused.value.details["known"] == sorted(DATASETS)


# --- training -----------------------------------------------------------------------------

def test_training_2x64_reaches_over_90_percent_checkpointing_every_epoch(
        digits: Split, tmp_path: Path) -> None:
    """Given digits, when 2x64 trains 20 epochs, each epoch is on disk before it is told."""
    on_disk: list[int] = []

    def on_epoch(epoch: int, epochs: int, metrics: EpochMetrics) -> None:
        checkpoint = load_checkpoint(tmp_path)
        assert checkpoint is not None and epochs == 20
        on_disk.append(checkpoint.epoch)
        assert checkpoint.history[-1] == metrics["val_accuracy"]

    result = train_trial(digits, SMALL, epochs=20, seed=0, index=0,
                         checkpoint_dir=tmp_path, on_epoch=on_epoch)

    assert on_disk == list(range(1, 21))
    assert result.val_accuracy > 0.9 and result.val_accuracy == result.history[-1]
    assert result.params == 64 * 64 + 64 + 64 * 64 + 64 + 64 * 10 + 10
    assert result.epochs_done == 20 and result.resumed_from == 0 and len(result.history) == 20
    assert result.metrics["val_accuracy"] == result.val_accuracy
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT_FILE]


def test_a_stopped_trial_resumes_after_its_checkpoint_and_ends_as_if_never_stopped(
        digits: Split, tmp_path: Path) -> None:
    # Given a trial asked to stop after epoch 2 of 6
    first = Epochs(stop_after=2)
    with pytest.raises(TrainingStopped) as stopped:
        train_trial(digits, SMALL, epochs=6, seed=7, index=1,
                    checkpoint_dir=tmp_path / "a", on_epoch=first,
                    should_stop=first.should_stop, passes_per_epoch=2)
    assert stopped.value.epochs_done == 2 and first.seen == [1, 2]
    checkpoint = load_checkpoint(tmp_path / "a")
    assert checkpoint is not None and checkpoint.epoch == 2

    # When it is trained again
    second = Epochs()
    resumed = train_trial(digits, SMALL, epochs=6, seed=7, index=1,
                          checkpoint_dir=tmp_path / "a", on_epoch=second, passes_per_epoch=2)

    # Then only epochs 3..6 ran, and the result is the uninterrupted one's
    assert second.seen == [3, 4, 5, 6] and resumed.resumed_from == 2
    assert resumed.epochs_done == 6 and len(resumed.history) == 6
    straight = train_trial(digits, SMALL, epochs=6, seed=7, index=1,
                           checkpoint_dir=tmp_path / "b", passes_per_epoch=2)
    assert resumed.history == straight.history
    assert np.array_equal(resumed.model.predict_proba(digits.x_val),
                          straight.model.predict_proba(digits.x_val))


def test_a_finished_trial_is_returned_from_its_checkpoint_without_training(
        digits: Split, tmp_path: Path) -> None:
    done = train_trial(digits, SMALL, epochs=3, seed=1, index=0,
                       checkpoint_dir=tmp_path)
    again = Epochs()
    result = train_trial(digits, SMALL, epochs=3, seed=1, index=0,
                         checkpoint_dir=tmp_path, on_epoch=again)
    assert again.seen == [] and result.resumed_from == 3 and result.history == done.history


def test_a_checkpoint_of_another_architecture_or_seed_is_refused(
        digits: Split, tmp_path: Path) -> None:
    train_trial(digits, SMALL, epochs=1, seed=1, index=0,
                checkpoint_dir=tmp_path)
    with pytest.raises(CheckpointMismatchError, match="delete it"):
        train_trial(digits, {"layers": 3, "units": 64}, epochs=2, seed=1,
                    index=0, checkpoint_dir=tmp_path)
    with pytest.raises(CheckpointMismatchError, match="random state 1"):
        train_trial(digits, SMALL, epochs=2, seed=1, index=5,
                    checkpoint_dir=tmp_path)


CHILD = """
import sys
from pathlib import Path
from tasks.nas.data import load_dataset
from tasks.nas.training import train_trial
train_trial(load_dataset("digits", 0), {"layers": 8, "units": 256}, epochs=1000, seed=0,
            index=0, checkpoint_dir=Path(sys.argv[1]))
"""


def kill_while_writing(folder: Path, timeout_s: float = 60.0) -> bool:
    """Train in a child process and SIGKILL it once a checkpoint is being written.

    True when the kill left the half-written temporary file behind (it landed mid-write).
    """
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(folder)], cwd=ROOT,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        deadline = time.monotonic() + timeout_s
        while not (folder / CHECKPOINT_FILE).exists():
            assert child.poll() is None and time.monotonic() < deadline, "child never trained"
            time.sleep(0.01)
        while not list(folder.glob(".*.partial")):
            assert child.poll() is None and time.monotonic() < deadline, "never saw a write"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    return bool(list(folder.glob(".*.partial")))


def test_a_process_killed_while_writing_a_checkpoint_leaves_the_previous_one_whole(
        digits: Split, tmp_path: Path) -> None:
    landed = [kill_while_writing(tmp_path) for _ in range(3)]
    assert any(landed), "no kill landed mid-write"
    checkpoint = load_checkpoint(tmp_path)
    assert checkpoint is not None and checkpoint.epoch >= 1

    resumed = train_trial(digits, {"layers": 8, "units": 256},
                          epochs=checkpoint.epoch + 1, seed=0, index=0, checkpoint_dir=tmp_path)
    assert resumed.resumed_from == checkpoint.epoch and resumed.epochs_done == checkpoint.epoch + 1
    assert [p.name for p in tmp_path.iterdir()] == [CHECKPOINT_FILE]


# --- artifacts ----------------------------------------------------------------------------

class Payload:
    """A type of this test module: not one a model file may hold."""

    def __init__(self) -> None:
        self.command = "rm -rf /"


def test_an_artifact_round_trips_and_its_checksum_is_checked(
        digits: Split, tmp_path: Path) -> None:
    model = train_trial(digits, SMALL, epochs=2, seed=0, index=0,
                        checkpoint_dir=tmp_path / "trial").model
    path = tmp_path / "trial" / "model.skops"
    size, sha256 = save_artifact(model, path)
    assert size == path.stat().st_size and len(sha256) == 64

    loaded = load_artifact(path, sha256=sha256)

    assert np.array_equal(loaded.predict(digits.x_val),
                          model.predict(digits.x_val))
    with pytest.raises(ArtifactRefusedError, match="altered or replaced"):
        load_artifact(path, sha256="0" * 64)


def test_a_file_holding_an_untrusted_type_is_refused(tmp_path: Path) -> None:
    sio.dump({"model": Payload()}, tmp_path / "evil.skops")
    with pytest.raises(ArtifactRefusedError, match=r"test_nas_library\.Payload") as refused:
        load_artifact(tmp_path / "evil.skops")
    assert isinstance(refused.value, NonRetryableError)

    (tmp_path / "pickled.skops").write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ArtifactRefusedError, match="not a readable skops file"):
        load_artifact(tmp_path / "pickled.skops")

    (tmp_path / "trial").mkdir()
    sio.dump({"model": Payload()}, tmp_path / "trial" / CHECKPOINT_FILE)
    with pytest.raises(ArtifactRefusedError, match="not trusted"):
        load_checkpoint(tmp_path / "trial")


def test_files_are_laid_out_per_run_and_trial_and_removed_idempotently(tmp_path: Path) -> None:
    storage = NasStorage()
    storage.configure(tmp_path / "nas")
    assert storage.checkpoint_path("r1", 3) == tmp_path / "nas/r1/trial-3/checkpoint.skops"
    assert storage.model_path("r1", 3) == tmp_path / "nas/r1/trial-3/model.skops"
    with pytest.raises(ValueError, match="not a run id"):
        storage.run_dir("../etc")
    storage.model_path("r1", 3).parent.mkdir(parents=True)
    storage.model_path("r1", 3).write_bytes(b"x")
    storage.checkpoint_path("r1", 3).write_bytes(b"x")

    removed = remove_files([storage.model_path("r1", 3), storage.run_dir("r1")])

    assert removed == [storage.model_path("r1", 3), storage.run_dir("r1")]
    assert not storage.run_dir("r1").exists()
    assert remove_files([storage.model_path("r1", 3), storage.run_dir("r1")]) == []


# --- frontier -----------------------------------------------------------------------------

def brute_force(points: list[Point]) -> list[Point]:
    def beaten(p: Point) -> bool:
        return any((q.accuracy > p.accuracy and q.params <= p.params)
                   or (q.accuracy >= p.accuracy and q.params < p.params) for q in points)
    return [p for p in points if not beaten(p)]


point_lists = st.lists(
    st.tuples(st.sampled_from([0.5, 0.8, 0.9, 0.95, 0.99]), st.integers(1, 8)), max_size=25,
).map(lambda rows: [Point(id=f"t{i:02}", accuracy=a, params=p) for i, (a, p) in enumerate(rows)])


@settings(max_examples=300, deadline=None)
@given(points=point_lists)
def test_the_frontier_is_exactly_the_undominated_points_smallest_first(
        points: list[Point]) -> None:
    frontier = pareto_frontier(points)
    assert sorted(frontier, key=lambda p: p.id) == sorted(brute_force(points), key=lambda p: p.id)
    assert [p.params for p in frontier] == sorted(p.params for p in frontier)
    if points:
        assert best(frontier) == best(points)


def test_best_prefers_accuracy_then_fewer_params_then_the_lower_id() -> None:
    a, b, c, d = (Point("a", 0.9, 100), Point("b", 0.95, 900), Point("c", 0.95, 500),
                  Point("d", 0.95, 500))
    assert best([a, b, c, d]) == c and best([d, b, c]) == c and best([a]) == a
    assert pareto_frontier([a, b, c, d]) == [a, c, d]
    with pytest.raises(ValueError, match="no trial completed"):
        best([])
    with pytest.raises(ValueError, match="finite accuracy"):
        pareto_frontier([Point("x", float("nan"), 1)])


# --- database -----------------------------------------------------------------------------

def test_a_fresh_database_gets_the_nas_tables_and_the_digits_dataset(tmp_path: Path) -> None:
    from alembic import command

    url = f"sqlite:///{tmp_path / 'nas.db'}"
    db = Database()
    db.configure(url)
    try:
        assert set(inspect(db.engine).get_table_names()) >= NAS_TABLES
        command.check(alembic_config(url))
        with db.session() as session:
            digits_row = session.scalars(select(TrainingDataset)).one()
            assert (digits_row.name, digits_row.source) == ("digits", "sklearn:digits")
            assert (digits_row.n_samples, digits_row.n_features, digits_row.n_classes) == (
                1797, 64, 10)
            assert ensure_dataset(session, "digits").id == digits_row.id
            with pytest.raises(UnknownDatasetError):
                ensure_dataset(session, "mnist")

        again = Database()
        again.configure(url)  # seeding again adds nothing
        again.dispose()
        with db.session() as session:
            assert session.scalar(select(func.count()).select_from(TrainingDataset)) == 1
            run = ModelRun(id=new_uuid7(), saga_key="nas-1", dataset_id=digits_row.id,
                           search_space={"layers": [2], "units": [64]}, max_trials=1, epochs=2,
                           seed=0, correlation_id="c-1")
            trial = Trial(id=new_uuid7(), run_id=run.id, index=0, architecture=SMALL)
            artifact = Artifact(id=new_uuid7(), run_id=run.id, trial_id=trial.id,
                                path="var/nas/x/trial-0/model.skops", bytes=10, sha256="0" * 64)
            version = ModelVersion(id=new_uuid7(), name="digits-mlp", version=1, run_id=run.id,
                                   trial_id=trial.id, artifact_id=artifact.id)
            session.add(run)
            session.flush()
            session.add(trial)
            session.flush()
            session.add(artifact)
            session.flush()
            session.add(version)
        with db.session() as session:
            stored = session.get(Trial, trial.id)
            assert stored is not None and stored.status == TrialStatus.PENDING
            assert stored.epochs_done == 0 and stored.metrics == {}
            assert session.get(ModelRun, run.id).status == RunStatus.PENDING
            assert session.get(Artifact, artifact.id).format == "skops"
        with pytest.raises(IntegrityError), db.session() as session:
            session.add(Trial(id=new_uuid7(), run_id=run.id, index=0, architecture=SMALL))
    finally:
        db.dispose()
