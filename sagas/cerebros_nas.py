"""Cerebros NAS, as in Thunderline's Reactor saga: neural architecture search (Bolt only).

Load the dataset, record the run, propose architectures, train one branch per proposal in
parallel (a group decided at run time, on the training queue), collect the models, find
the Pareto frontier of accuracy against size, register the best as a model version,
announce it.

The seed dispatched training jobs and polled for them (every 5 s, for at most 300 s); here
the saga goes on when the last training branch ends, without polling. A failure or a cancel
stops running trials at the end of their epoch, deletes every trial's model and
checkpoints (the seed's stubbed cancellation), and marks the run failed or cancelled.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel, Field

from sagaline import NO_RETRY, Domains, FromInput, FromStep, RetryPolicy, Saga, Step
from tasks.nas.search import SearchSpace
from tasks.nas.steps import (
    analyze_pareto,
    collect_artifacts,
    create_model_run,
    emit_completion_event,
    generate_proposals,
    mark_run_failed,
    persist_version,
    prepare_dataset,
    retire_version,
)
from tasks.nas.trials import discard, train


class NasInput(BaseModel):
    """What to search: the dataset, the space, how many trials of how many epochs."""

    dataset_id: str = Field(default="digits", min_length=1, max_length=100)
    search_space: SearchSpace = Field(
        default_factory=lambda: SearchSpace(layers=[2, 4, 8], units=[64, 128, 256]))
    max_trials: int = Field(default=10, ge=1, le=100)
    epochs: int = Field(default=10, ge=1, le=500)
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    concurrency: int = Field(default=4, ge=1, le=64)
    """How many trials train at once (more wait their turn)."""
    passes_per_epoch: int = Field(default=1, ge=1, le=100)
    """Passes over the training data in one epoch (a longer epoch: a finer cancel check)."""


RUN_ID = FromStep("create_model_run", "run_id")
QUICK_RETRY = RetryPolicy(attempts=3, initial=timedelta(milliseconds=200))

cerebros_nas = Saga(
    "cerebros_nas",
    description="Search architectures: train one model per proposal, register the best.",
    inputs=NasInput,
    domains=Domains("bolt", reason="the NAS workflow stays within the ML domain"),
    steps=[
        Step("prepare_dataset", prepare_dataset,
             args={"dataset_id": FromInput("dataset_id"), "seed": FromInput("seed")},
             retry=NO_RETRY),
        Step("create_model_run", create_model_run, compensation=mark_run_failed,
             args={"dataset_id": FromStep("prepare_dataset", "dataset_id"),
                   "search_space": FromInput("search_space"),
                   "max_trials": FromInput("max_trials"), "epochs": FromInput("epochs"),
                   "seed": FromInput("seed")},
             compensation_args={"run_id": RUN_ID}, retry=QUICK_RETRY),
        Step("generate_proposals", generate_proposals, adds=(train, discard),
             args={"run_id": RUN_ID, "search_space": FromInput("search_space"),
                   "max_trials": FromInput("max_trials"), "seed": FromInput("seed"),
                   "concurrency": FromInput("concurrency"),
                   "passes_per_epoch": FromInput("passes_per_epoch")},
             retry=QUICK_RETRY),
        Step("collect_artifacts", collect_artifacts, args={"run_id": RUN_ID},
             retry=QUICK_RETRY),
        Step("analyze_pareto", analyze_pareto,
             args={"trials": FromStep("collect_artifacts", "trials")}, retry=NO_RETRY),
        Step("persist_version", persist_version, compensation=retire_version,
             args={"run_id": RUN_ID, "trial_id": FromStep("analyze_pareto", "best")},
             compensation_args={"version_id": FromStep("persist_version", "version_id")},
             retry=QUICK_RETRY),
        Step("emit_completion_event", emit_completion_event,
             args={"run_id": RUN_ID,
                   "version_id": FromStep("persist_version", "version_id"),
                   "val_accuracy": FromStep("analyze_pareto", "val_accuracy"),
                   "frontier": FromStep("analyze_pareto", "frontier"),
                   "trials": FromStep("generate_proposals", "trials")},
             retry=QUICK_RETRY),
    ],
    returns={"run_id": RUN_ID, "version_id": FromStep("persist_version", "version_id"),
             "version": FromStep("persist_version", "version"),
             "val_accuracy": FromStep("analyze_pareto", "val_accuracy")},
    step_time_limit=timedelta(seconds=60),
)
