"""How the shop answers errors: ``{"detail": ..., "errors": [...]}`` with a fitting status.

The engine's errors keep their message (it says what to do); invalid inputs list each
field's problem as the engine names it (``items.0.quantity``). A failure of Redis is
answered 503 without its text (which names hosts) and logged instead.
"""

from __future__ import annotations

import logging

import redis
from flask import Flask, Response, jsonify

from sagaline import (
    EnqueueError,
    IdempotencyConflictError,
    InvalidInputError,
    SagaError,
    SagaNotFoundError,
    SagasDisabledError,
)

log = logging.getLogger("examples.shop")

STATUS_OF: dict[type[SagaError], int] = {
    InvalidInputError: 422,
    IdempotencyConflictError: 409,
    SagaNotFoundError: 404,
    SagasDisabledError: 503,
    EnqueueError: 503,
}
"""The status each engine error is answered with; other errors are Flask's 500."""

STORE_DOWN = "the order store (Redis) cannot be reached; try again shortly"
"""The answer when Redis fails; its own message stays in the server's log."""


def problem(code: int, detail: str, errors: list[dict[str, str]] | None = None
            ) -> tuple[Response, int]:
    """An error answer in the shop's one shape.

    Args:
        code: The HTTP status.
        detail: What went wrong and what to do about it.
        errors: For invalid input, each field's problem: ``{"field", "problem"}``.

    Returns:
        The JSON response and its status, as a Flask view returns them.
    """
    return jsonify(detail=detail, errors=errors or []), code


def install(app: Flask) -> None:
    """Answer the engine's errors and Redis failures raised in ``app`` as problems.

    Args:
        app: The shop's Flask app.
    """
    for error_type in STATUS_OF:
        app.register_error_handler(error_type, _saga_error)
    app.register_error_handler(redis.RedisError, _store_down)


def _saga_error(error: SagaError) -> tuple[Response, int]:
    code = next(c for t, c in STATUS_OF.items() if isinstance(error, t))
    errors = error.errors if isinstance(error, InvalidInputError) else None
    return problem(code, str(error), errors)


def _store_down(error: redis.RedisError) -> tuple[Response, int]:
    log.error("Redis failed while answering a request: %s", error)
    return problem(503, STORE_DOWN)
