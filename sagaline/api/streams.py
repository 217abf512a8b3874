"""A saga's transitions as server-sent events, live, until it is final.

The stream polls the saga's transition log (as ``sagaline demo`` follows a run) and sends:

- ``transition``, one per log entry, in order, its ``id`` the entry's position in the log
  (a client that reconnects with ``Last-Event-ID`` goes on after it), its data the entry
  as in a run's ``log`` plus ``index``;
- ``progress``, while a step runs and reports ``ctx.progress``: ``{"step", "progress"}``,
  each new report once (looked for every :data:`PROGRESS_EVERY_S`);
- ``end``, once the saga is final, with its summary (as ``GET /sagas/{id}``); then the
  stream closes;
- ``error``, when the saga's record expired or Redis failed mid-stream; then it closes.

A comment line every :data:`KEEPALIVE_S` keeps proxies from closing a quiet stream.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import redis
from fastapi import Request

from sagaline.api.problems import STORE_DOWN
from sagaline.engine import Sagaline
from sagaline.errors import SagaNotFoundError
from sagaline.outcome import SagaRun, Transition
from sagaline.status import StepStatus

log = logging.getLogger("sagaline.api")

POLL_S = 0.2
"""How often the log is read."""
PROGRESS_EVERY_S = 1.0
"""How often the steps' progress reports are read, while the saga runs."""
KEEPALIVE_S = 15.0
"""The longest silence before a comment line keeps the connection open."""
RETRY_MS = 2000
"""How long a client waits before it reconnects after the connection dropped."""

_RUNNING = (StepStatus.RUNNING, StepStatus.RETRYING)


def event(kind: str, data: Any, event_id: int | None = None) -> str:
    """One server-sent event.

    Args:
        kind: Its ``event`` field.
        data: Its data, sent as one line of compact JSON.
        event_id: Its ``id`` field, if any.

    Returns:
        The event's text, ending in the blank line that ends an event.
    """
    lines = [f"event: {kind}"]
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.append("data: " + json.dumps(data, ensure_ascii=False, separators=(",", ":")))
    return "\n".join(lines) + "\n\n"


def transition_data(entry: dict[str, Any], index: int) -> dict[str, Any]:
    """A decoded log entry in the form of a run's ``log`` entries, with its ``index``."""
    data = dict(entry)
    at = datetime.fromtimestamp(float(data.pop("at")), tz=UTC)
    shaped = Transition(at=at, event=data.pop("event"), step=data.pop("step", None),
                        attempt=data.pop("attempt", None), detail=data)
    return {"index": index, **shaped.model_dump(mode="json")}


async def follow(engine: Sagaline, saga_id: str, start: int, request: Request
                 ) -> AsyncIterator[str]:
    """The saga's events from log entry ``start`` on, until it is final or the client left.

    Args:
        engine: The engine whose store records the saga.
        saga_id: The saga's id.
        start: The first log entry to send.
        request: The request, to notice the client leaving.

    Yields:
        Server-sent events, as text.
    """
    yield f"retry: {RETRY_MS}\n\n"
    try:
        async for text in _events(engine, saga_id, start, request):
            yield text
    except SagaNotFoundError:
        yield event("error", {"detail": f"saga {saga_id} is no longer recorded (it expired)"})
    except redis.RedisError as error:
        log.error("events of saga %s: Redis failed: %s", saga_id, error)
        yield event("error", {"detail": STORE_DOWN + "; reconnect to go on"})


async def _events(engine: Sagaline, saga_id: str, start: int, request: Request
                  ) -> AsyncIterator[str]:
    store = engine.store
    seen, reported = start, dict[str, datetime]()
    quiet_since = next_progress = time.monotonic()
    while not await request.is_disconnected():
        # The status first: once it is final, the log read after it holds the final entry.
        status = await asyncio.to_thread(store.status, saga_id)
        entries = await asyncio.to_thread(store.transitions, saga_id, seen)
        texts = []
        for entry in entries:
            texts.append(event("transition", transition_data(entry, seen), seen))
            seen += 1
        if status is None:
            raise SagaNotFoundError(saga_id)
        if status.is_final:
            run = await asyncio.to_thread(engine.get, saga_id)
            yield "".join(texts) + event("end", run.summary())
            return
        if time.monotonic() >= next_progress:
            texts += _progress(await asyncio.to_thread(engine.get, saga_id), reported)
            next_progress = time.monotonic() + PROGRESS_EVERY_S
        if texts or time.monotonic() - quiet_since >= KEEPALIVE_S:
            yield "".join(texts) or ": keep-alive\n\n"
            quiet_since = time.monotonic()
        await asyncio.sleep(POLL_S)


def _progress(run: SagaRun, reported: dict[str, datetime]) -> list[str]:
    """Events for running steps' progress reports not sent yet, noted in ``reported``."""
    texts = []
    for step in run.steps:
        progress = step.progress
        if progress is None or step.status not in _RUNNING \
                or reported.get(step.name) == progress.at:
            continue
        reported[step.name] = progress.at
        texts.append(event("progress", {"step": step.name,
                                        "progress": progress.model_dump(mode="json")}))
    return texts
