"""Prometheus metrics of saga runs, counted by the processes that run them.

Metrics (``saga`` is the saga's name; correlation ids are not labels, since every run
would make a new series):

- ``sagaline_sagas_started_total{saga}``: runs whose first step began its first attempt.
  Counted in the worker, not where ``start()`` was called (a web app that serves no
  metrics), so that the counters of the workers alone add up: started = completed +
  compensated + compensation_failed + cancelled + still running.
- ``sagaline_sagas_completed_total``, ``..._failed_total`` (the forward path failed or the
  deadline passed; a rollback follows), ``..._compensated_total``,
  ``..._compensation_failed_total``, ``..._cancelled_total``, each ``{saga}``.
- ``sagaline_step_duration_seconds{saga,step,role,outcome}``: a histogram of each attempt
  of an action (``role="action"``) or compensation, ``outcome`` ``succeeded`` or ``failed``.

A prefork worker's children each count; :func:`prepare_multiprocess` (in the worker's main
process, before the pool starts) switches prometheus_client to its multiprocess mode, and
:func:`serve` serves the sum of every child from the main process.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, values
from prometheus_client import start_http_server as _start_http_server
from prometheus_client.multiprocess import MultiProcessCollector

from sagaline import telemetry

HANDLER_ID = "sagaline.exporters.prometheus"
#: Seconds: from a quick database write to an hour-long training step.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                    60.0, 300.0, 1800.0, 3600.0, float("inf"))
_OUTCOME_COUNTERS = {
    telemetry.SAGA_COMPLETE: "completed",
    telemetry.SAGA_FAIL: "failed",
    telemetry.SAGA_COMPENSATED: "compensated",
    telemetry.SAGA_COMPENSATION_FAILED: "compensation_failed",
    telemetry.SAGA_CANCELLED: "cancelled",
}


@dataclass(frozen=True)
class SagaMetrics:
    """The metrics an installed exporter updates."""

    counters: dict[str, Counter]
    """By outcome: ``started``, ``completed``, ``failed``, ``compensated``, ..."""
    step_duration: Histogram
    """Each attempt's duration in seconds."""


def prepare_multiprocess(directory: Path) -> None:
    """Count in files under ``directory`` (emptied), so prefork children add up.

    Call it in the worker's main process before any metric exists and before the pool
    forks; the children inherit the setting.
    """
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    # prometheus_client chose its value class when first imported: choose again now.
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]


def install(registry: CollectorRegistry | None = REGISTRY) -> SagaMetrics:
    """Create the metrics in ``registry`` and count every saga transition of this process.

    Raises:
        ValueError: It is installed already.
    """
    counters = {
        outcome: Counter(f"sagaline_sagas_{outcome}_total", f"Saga runs {outcome}, by saga",
                         ["saga"], registry=registry)
        for outcome in ("started", *_OUTCOME_COUNTERS.values())
    }
    duration = Histogram(
        "sagaline_step_duration_seconds", "Duration of each attempt of a step's action or "
        "compensation", ["saga", "step", "role", "outcome"], buckets=DURATION_BUCKETS,
        registry=registry,
    )

    def count(event: telemetry.Event, measurements: Mapping[str, float],
              metadata: Mapping[str, Any]) -> None:
        saga = str(metadata.get("saga", ""))
        if event in _OUTCOME_COUNTERS:
            counters[_OUTCOME_COUNTERS[event]].labels(saga).inc()
        elif event[2] == "start":
            if (event == telemetry.STEP_START and metadata.get("position") == 1
                    and metadata.get("attempt") == 1):
                counters["started"].labels(saga).inc()
        else:
            outcome = "succeeded" if event[2] == "stop" else "failed"
            duration.labels(saga, str(metadata.get("step")), str(metadata.get("role")),
                            outcome).observe(measurements["duration_s"])

    events = set(_OUTCOME_COUNTERS) | telemetry.OPERATION_EVENTS
    telemetry.attach(HANDLER_ID, events, count)
    return SagaMetrics(counters, duration)


def uninstall() -> bool:
    """Stop counting (the metrics stay registered); ``False`` if it was not installed."""
    return telemetry.detach(HANDLER_ID)


def serve(port: int, addr: str = "0.0.0.0", *, multiprocess_dir: Path | None = None) -> None:
    """Serve ``/metrics`` over HTTP on ``port`` from a background thread.

    With ``multiprocess_dir`` (see :func:`prepare_multiprocess`) it serves the sum over
    every process counting in that folder; otherwise this process's own registry.
    """
    directory = multiprocess_dir
    registry = REGISTRY
    if directory:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]
    _start_http_server(port, addr=addr, registry=registry)
