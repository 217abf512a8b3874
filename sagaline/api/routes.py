"""The ``/sagas`` routes: start, show, list, cancel, signal and follow sagas of one engine.

Each answers in the form the CLI's ``--json`` prints: a saga as its summary
(:meth:`SagaRun.summary <sagaline.SagaRun.summary>`), a start as ``{saga_id,
correlation_id, name}``, a cancel as ``{saga_id, status}``, a signal as its
:class:`~sagaline.SignalReceipt`. Errors are mapped to statuses
in :mod:`sagaline.api.problems`.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, HTTPException, Path, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from sagaline.api.bodies import (
    Cancelled,
    CancelRequest,
    FieldProblem,
    Problem,
    SagaPage,
    SagaSummary,
    StartedSaga,
)
from sagaline.api.paging import Cursor, CursorError, page_ids
from sagaline.api.problems import problem
from sagaline.api.streams import follow
from sagaline.engine import Sagaline
from sagaline.errors import InvalidInputError, SagaNotFoundError
from sagaline.outcome import SagaRun, SignalReceipt
from sagaline.status import SagaStatus

MAX_LIMIT = 200
"""The most sagas one page lists."""

SagaId = Annotated[str, Path(max_length=64, description="The saga's id, a UUID.")]

_EXAMPLE_UUID = "0190f5e8-7c3a-7b21-9d4e-5f6a7b8c9d0e"
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem, "description": "No saga has that id (or it expired)."}}
_INVALID: dict[int | str, dict[str, Any]] = {
    422: {"model": Problem, "description": "Invalid input; `errors` names each field."}}
_EVENT_STREAM: dict[int | str, dict[str, Any]] = {200: {
    "content": {"text/event-stream": {"schema": {"type": "string"}}},
    "description": "Server-sent events: `transition` (one per log entry, `id` its index), "
                   "`progress`, then `end` with the saga's summary; or `error`."}}


class SagaRoutes:
    """The ``/sagas`` routes on one engine (:meth:`router` builds them)."""

    def __init__(self, engine: Sagaline) -> None:
        """Serve the sagas of ``engine``."""
        self.engine = engine

    def router(self) -> APIRouter:
        """The routes, under ``/sagas``, for the API to include behind its token check."""
        router = APIRouter(prefix="/sagas", tags=["sagas"])
        router.add_api_route(
            "/{name}", self.start_saga, methods=["POST"], status_code=202,
            response_model=StartedSaga, summary="Start a saga",
            responses={**_NOT_FOUND, **_INVALID,
                       409: {"model": Problem, "description": "Idempotency-Key reused."},
                       503: {"model": Problem,
                             "description": "Sagas are switched off, or Redis is away."}})
        router.add_api_route("", self.list_sagas, methods=["GET"], response_model=SagaPage,
                             summary="List sagas, newest first", responses=_INVALID)
        router.add_api_route("/{saga_id}", self.get_saga, methods=["GET"],
                             response_model=SagaSummary, summary="Show a saga",
                             responses=_NOT_FOUND)
        router.add_api_route(
            "/{saga_id}/cancel", self.cancel_saga, methods=["POST"], status_code=202,
            response_model=Cancelled, summary="Cancel a saga",
            responses={**_NOT_FOUND, 409: {"model": Problem, "description": "It ended."}})
        router.add_api_route(
            "/{saga_id}/signals/{signal}", self.signal_saga, methods=["POST"], status_code=202,
            response_model=SignalReceipt, summary="Send a saga a signal",
            responses={**_NOT_FOUND, **_INVALID,
                       409: {"model": Problem, "description": "The saga no longer runs."}})
        router.add_api_route("/{saga_id}/events", self.saga_events, methods=["GET"],
                             response_class=StreamingResponse, summary="Follow a saga live",
                             responses={**_EVENT_STREAM, **_NOT_FOUND})
        return router

    def start_saga(
        self, request: Request, response: Response,
        name: Annotated[str, Path(max_length=200, description="The saga's registered name.")],
        inputs: Annotated[dict[str, Any], Body(description="The saga's inputs.")],
        idempotency_key: Annotated[str | None, Header(
            alias="Idempotency-Key", description="Starts the saga once: the same request "
            "sent again answers with the saga the first one started.")] = None,
        correlation_id: Annotated[str | None, Header(
            alias="X-Correlation-ID", description="The business flow's id, a UUID.")] = None,
        causation_id: Annotated[str | None, Header(
            alias="X-Causation-ID", description="The id (a UUID) of what caused it.")] = None,
    ) -> StartedSaga:
        """Start saga `name` with the inputs in the body; answer at once with its id.

        The saga runs on the workers: follow it at the `Location` answered, or its events.
        An `Idempotency-Key` starts it once: sent again, the same request is answered with
        the saga the first one started and starts nothing; with other inputs it is refused
        (409). Invalid inputs are refused (422, naming each field) before anything is
        recorded.
        """
        for header, value in (("X-Correlation-ID", correlation_id),
                              ("X-Causation-ID", causation_id)):
            if value is not None and not _is_uuid(value):
                raise InvalidInputError(name, [{"field": header, "problem": (
                    f"must be a UUID such as '{_EXAMPLE_UUID}', or left out")}])
        handle = self.engine.start(name, inputs, correlation_id=correlation_id,
                                   causation_id=causation_id, idempotency_key=idempotency_key)
        root = request.scope.get("root_path", "")
        response.headers["Location"] = f"{root}/sagas/{handle.saga_id}"
        return StartedSaga(saga_id=handle.saga_id, correlation_id=handle.correlation_id,
                           name=name)

    def get_saga(self, saga_id: SagaId) -> JSONResponse:
        """The saga as recorded now: its status, steps, compensations, result or error."""
        return JSONResponse(self.engine.get(saga_id_of(saga_id)).summary())

    def list_sagas(
        self,
        status: Annotated[SagaStatus | None, Query(description="Only sagas in this status.")]
        = None,
        name: Annotated[str | None, Query(max_length=200, description="Only this saga.")]
        = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="At most this many.")]
        = 20,
        cursor: Annotated[str | None, Query(max_length=1000, description="The `next_cursor` "
                                            "of the page before.")] = None,
    ) -> JSONResponse:
        """Sagas, newest first, a page at a time; `next_cursor` asks for the next page.

        Pass the same `status` and `name` with each page's cursor. A page filtered by name
        may hold fewer than `limit` sagas and still have a next one.
        """
        try:
            after = None if cursor is None else Cursor.decode(cursor, status, name)
        except CursorError as error:
            return problem(422, f"invalid request: cursor: {error}",
                           [FieldProblem(field="cursor", problem=str(error))])
        ids, following = page_ids(self.engine.store, status, name, limit, after)
        return JSONResponse({"sagas": [run.summary() for run in self._runs(ids)],
                             "next_cursor": following.encode() if following else None})

    def cancel_saga(self, saga_id: SagaId,
                    body: Annotated[CancelRequest | None, Body()] = None) -> Cancelled:
        """Cancel a running saga: no new step starts; its completed steps are undone.

        Answered `compensating` while the undo runs (`cancelled` when nothing needed
        undoing); follow it with `GET /sagas/{saga_id}` or its events. A saga that has
        already ended is answered 409.
        """
        saga_id = saga_id_of(saga_id)
        status = self.engine.store.status(saga_id)
        if status is None:
            raise SagaNotFoundError(f"no saga {saga_id!r} is recorded (it may have expired)")
        if not status.is_final:
            status = self.engine.cancel(saga_id, (body or CancelRequest()).reason)
            if status in (SagaStatus.CANCELLED, SagaStatus.COMPENSATING):
                return Cancelled(saga_id=saga_id, status=status)
        raise HTTPException(409, f"saga {saga_id} has already ended ({status.value}); there "
                                 "is nothing to cancel")

    def signal_saga(
        self, saga_id: SagaId,
        signal: Annotated[str, Path(max_length=64, description="The signal's name "
                                    "(`approval`).")],
        payload: Annotated[dict[str, Any] | None, Body(
            description="The signal's payload, a JSON object (none: `{}`); the same "
            "payload sent again is kept once.")] = None,
    ) -> SignalReceipt:
        """Send a running saga a signal: an approval, an outside system's answer.

        A step waiting for it runs again (`delivered`); otherwise it is kept for the step
        that reads it later (`kept`); the same payload again changes nothing
        (`duplicate`). A saga that no longer runs answers 409.
        """
        return self.engine.signal(saga_id_of(saga_id), signal, payload)

    async def saga_events(
        self, request: Request, saga_id: SagaId,
        last_event_id: Annotated[str | None, Header(
            alias="Last-Event-ID", description="The id of the last event received: go on "
            "after it.")] = None,
    ) -> Response:
        """The saga's transitions as server-sent events, live, ending once it is final.

        Events: `transition` (each log entry, in order; its `id` is the entry's index),
        `progress` (a running step's report), `end` (the final summary), `error`.
        Reconnecting with `Last-Event-ID` goes on after that entry.
        """
        saga_id = saga_id_of(saga_id)
        start = 0
        if last_event_id is not None:
            if not last_event_id.strip().isdigit():
                return problem(422, "Last-Event-ID must be the id of an event this stream "
                               "sent (a number); leave it out to start from the first",
                               [FieldProblem(field="Last-Event-ID", problem="not a number")])
            start = int(last_event_id) + 1
        if await asyncio.to_thread(self.engine.store.status, saga_id) is None:
            raise SagaNotFoundError(f"no saga {saga_id!r} is recorded (it may have expired)")
        return StreamingResponse(follow(self.engine, saga_id, start, request),
                                 media_type="text/event-stream",
                                 headers={"X-Accel-Buffering": "no"})

    def _runs(self, ids: list[str]) -> list[SagaRun]:
        """The runs of ``ids``, in order, leaving out any that expired meanwhile."""
        runs = []
        for saga_id in ids:
            try:
                runs.append(self.engine.get(saga_id))
            except SagaNotFoundError:
                continue
        return runs


def saga_id_of(raw: str) -> str:
    """The saga id ``raw`` in canonical form.

    Raises:
        SagaNotFoundError: ``raw`` is not a UUID, so no saga has it.
    """
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise SagaNotFoundError(f"no saga {raw!r} is recorded: saga ids are UUIDs, as "
                                "POST /sagas/{name} answers them") from None


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True
