"""Where the NAS files live: one folder per run, one per trial, under a configured root.

A trial's files are ``<root>/<run_id>/trial-<index>/checkpoint.skops`` (the model after its
last finished epoch, so training can resume) and ``<root>/<run_id>/trial-<index>/model.skops``
(the trained model, kept as the trial's artifact).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

CHECKPOINT_FILE = "checkpoint.skops"
"""The name of a trial's checkpoint in its folder."""

MODEL_FILE = "model.skops"
"""The name of a trial's trained model (its artifact) in its folder."""


@dataclass
class NasStorage:
    """The root folder of NAS files; ``configure`` it once per process."""

    root: Path = field(default_factory=lambda: Path("var/nas"))
    """Every run's folder is in here; relative paths are relative to the working directory."""

    def configure(self, root: Path) -> None:
        """Keep the files of every run under ``root`` from now on."""
        self.root = root

    def run_dir(self, run_id: str) -> Path:
        """The folder of a run's files."""
        if not run_id or "/" in run_id or "\\" in run_id or run_id in {".", ".."}:
            raise ValueError(f"{run_id!r} is not a run id; pass the ModelRun's id (a UUID)")
        return self.root / run_id

    def trial_dir(self, run_id: str, index: int) -> Path:
        """The folder of a trial's checkpoint and model."""
        if index < 0:
            raise ValueError(f"trial index {index} is negative; trials count from 0")
        return self.run_dir(run_id) / f"trial-{index}"

    def checkpoint_path(self, run_id: str, index: int) -> Path:
        """Where a trial's checkpoint is written after each epoch."""
        return self.trial_dir(run_id, index) / CHECKPOINT_FILE

    def model_path(self, run_id: str, index: int) -> Path:
        """Where a trial's trained model is saved as its artifact."""
        return self.trial_dir(run_id, index) / MODEL_FILE


def remove_files(paths: Iterable[Path]) -> list[Path]:
    """Delete files and folders (with what is in them), those already gone included.

    Safe to call again after a crash half-way: what is missing is skipped.

    Args:
        paths: checkpoints, artifacts, or trial and run folders.

    Returns:
        The paths that existed and were removed.
    """
    removed: list[Path] = []
    for path in paths:
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        except FileNotFoundError:
            continue
        removed.append(path)
    return removed


#: The process's NAS storage.
storage = NasStorage()
