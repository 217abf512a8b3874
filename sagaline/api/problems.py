"""How errors become answers: one JSON shape, :class:`~sagaline.api.bodies.Problem`, for all.

Sagaline's own errors keep their message (it says what to do), mapped to the status that
fits; invalid input lists every field's fault. A failure of Redis is answered 503 without
its text (which names hosts) and logged here instead. Anything else is FastAPI's 500.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from sagaline.api.bodies import FieldProblem, Problem
from sagaline.errors import (
    EnqueueError,
    IdempotencyConflictError,
    InvalidCorrelationIdError,
    InvalidInputError,
    SagaError,
    SagaNotFoundError,
    SagasDisabledError,
    StateError,
    UnknownSagaError,
)

log = logging.getLogger("sagaline.api")

STATUS_OF: dict[type[SagaError], int] = {
    UnknownSagaError: 404,
    SagaNotFoundError: 404,
    InvalidInputError: 422,
    InvalidCorrelationIdError: 422,
    IdempotencyConflictError: 409,
    SagasDisabledError: 503,
    EnqueueError: 503,
    StateError: 409,
}
"""The status each of Sagaline's errors is answered with; others are not caught."""

STORE_DOWN = "the saga store (Redis) cannot be reached; try again shortly"
"""The answer when Redis fails; its own message stays in the server's log."""


def problem(code: int, detail: str, errors: Sequence[FieldProblem] = (),
            headers: Mapping[str, str] | None = None) -> JSONResponse:
    """An error answer in the API's one shape.

    Args:
        code: The HTTP status.
        detail: What went wrong and what to do.
        errors: For invalid input, each field's fault.
        headers: Extra headers (``WWW-Authenticate`` for a 401).

    Returns:
        The JSON response.
    """
    body = Problem(detail=detail, errors=list(errors)).model_dump(mode="json")
    return JSONResponse(body, status_code=code, headers=headers)


def install(app: FastAPI) -> None:
    """Answer every error ``app`` raises in the :class:`Problem` shape.

    Args:
        app: The API's FastAPI app.
    """
    for error_type in STATUS_OF:
        app.add_exception_handler(error_type, _saga_error)
    app.add_exception_handler(redis.RedisError, _store_down)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(StarletteHTTPException, _http_error)


async def _saga_error(request: Request, error: Exception) -> JSONResponse:
    code = next(c for t, c in STATUS_OF.items() if isinstance(error, t))
    faults = [FieldProblem(field=str(e.get("field", "")), problem=str(e.get("problem", "")))
              for e in getattr(error, "errors", [])]
    return problem(code, str(error), faults)


async def _store_down(request: Request, error: Exception) -> JSONResponse:
    log.error("%s %s: Redis failed: %s", request.method, request.url.path, error)
    return problem(503, STORE_DOWN)


async def _invalid_request(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    faults = [FieldProblem(field=_field(e), problem=_fault(e)) for e in error.errors()]
    lines = "; ".join(f"{f.field}: {f.problem}" for f in faults)
    return problem(422, f"invalid request: {lines}", faults)


async def _http_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, StarletteHTTPException)
    return problem(error.status_code, str(error.detail), headers=error.headers)


def _field(error: dict[str, Any]) -> str:
    """``limit`` for ``("query", "limit")``; ``body`` for the body as a whole."""
    loc = [str(part) for part in error.get("loc", ())]
    if error.get("type") == "json_invalid" or len(loc) < 2:
        return loc[0] if loc else "request"
    return ".".join(loc[1:])


def _fault(error: dict[str, Any]) -> str:
    """The problem as pydantic says it, with what to send instead for a body that is none."""
    message = str(error.get("msg", "invalid"))
    if error.get("type") == "json_invalid":
        return f"not valid JSON ({error.get('ctx', {}).get('error', message)}); send a JSON object"
    if tuple(error.get("loc", ())) == ("body",):
        return f"{message}; send a JSON object (the saga's inputs, {{}} for none)"
    return message

