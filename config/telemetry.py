"""Telemetry from settings: transition logs, correlation on log lines, metrics, spans.

:func:`install` runs in every process that loads the app (workers, beat, a web app, the
CLI); the Prometheus server runs only in a worker's main process, started on
``worker_init`` (before the pool forks its children, which count into the same folder).
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from celery.signals import after_setup_logger, after_setup_task_logger, worker_init
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from sagaline.exporters import logs, otel, prometheus

from .settings import Settings

log = logging.getLogger("sagaline.exporters.prometheus")

#: Celery's default formats, with the saga's ids appended within a step.
WORKER_LOG_FORMAT = "[%(asctime)s: %(levelname)s/%(processName)s] %(message)s%(saga_context)s"
WORKER_TASK_LOG_FORMAT = ("[%(asctime)s: %(levelname)s/%(processName)s] "
                          "%(task_name)s[%(task_id)s]: %(message)s%(saga_context)s")


def install(app: Celery, settings: Settings) -> None:
    """Install the exporters the settings ask for, in this process."""
    app.conf.worker_log_format = WORKER_LOG_FORMAT
    app.conf.worker_task_log_format = WORKER_TASK_LOG_FORMAT
    logs.scope_celery_tasks()
    if settings.log_transitions:
        logs.install()
    if settings.otel:
        provider = otel.sdk_provider()
        if settings.otel_spans_file is not None:
            provider.add_span_processor(
                SimpleSpanProcessor(otel.JsonLinesSpanExporter(settings.otel_spans_file))
            )
        otel.install(provider)

    @after_setup_logger.connect(weak=False)  # type: ignore[untyped-decorator]
    def _ids_on_worker_lines(logger: Any, **_: Any) -> None:
        logs.add_context_filter(logger)

    @after_setup_task_logger.connect(weak=False)  # type: ignore[untyped-decorator]
    def _ids_on_task_lines(logger: Any, **_: Any) -> None:
        logs.add_context_filter(logger)

    @worker_init.connect(weak=False)  # type: ignore[untyped-decorator]
    def _serve_metrics(**_: Any) -> None:
        if settings.metrics_port is None:
            return
        # One folder per port: two workers on one machine never share one. The port is
        # bound first, so a worker started on a port in use fails before it empties the
        # folder of the worker that holds the port.
        directory = settings.data_dir / "metrics" / str(settings.metrics_port)
        directory.mkdir(parents=True, exist_ok=True)
        try:
            prometheus.serve(settings.metrics_port, settings.metrics_addr,
                             multiprocess_dir=directory)
        except OSError as error:
            # The worker still works; Prometheus sees the target down. (Celery would swallow
            # the error of a signal handler without a trace before logging is set up.)
            log.error("metrics not served: port %s: %s", settings.metrics_port, error)
            return
        prometheus.prepare_multiprocess(directory)
        prometheus.install()
