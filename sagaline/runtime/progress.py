"""Where ``ctx.progress`` reports go: the saga's record, telemetry, and the transport.

The record keeps each operation's latest report, so ``engine.get`` and ``sagaline status``
show how far a long step is; telemetry handlers see every report; the transport shows it
where its own tools look (Celery's: Flower). A report that cannot be recorded is logged and
dropped: progress never fails a step.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from sagaline import codec, telemetry
from sagaline.status import Role
from sagaline.store.redis import RedisStore

log = logging.getLogger("sagaline.progress")

Report = Callable[[dict[str, Any]], None]
"""A transport's way to show a report (Celery: a ``task-progress`` event for Flower)."""


@dataclass(frozen=True)
class ProgressSink:
    """Takes one attempt's reports: ``ctx.progress`` calls it with each."""

    store: RedisStore
    saga: str
    saga_id: str
    role: Role
    step: str
    attempt: int
    report: Report | None = None

    def __call__(self, progress: dict[str, Any]) -> None:
        """Record the report, tell telemetry, hand it to the transport."""
        progress = {**progress, "at": time.time()}
        try:
            self.store.record_progress(self.saga_id, self.role, self.step,
                                       codec.dumps(progress))
        except redis.RedisError as error:
            log.warning("[saga %s] progress of %s not recorded: %s", self.saga_id, self.step,
                        error)
        measurements = {"done": float(progress["done"])}
        if progress.get("total") is not None:
            measurements["total"] = float(progress["total"])
        telemetry.execute(telemetry.STEP_PROGRESS, measurements, {
            "saga": self.saga, "saga_id": self.saga_id, "step": self.step,
            "role": self.role.value, "attempt": self.attempt,
            "metrics": progress.get("metrics") or {}})
        if self.report is not None:
            try:
                self.report({**progress, "step": self.step, "saga_id": self.saga_id})
            except Exception as error:  # a monitoring channel must never fail the step
                log.warning("[saga %s] progress of %s not shown: %s", self.saga_id, self.step,
                            error)
