"""The HTTP API's app: one engine's sagas, for web apps, behind bearer tokens.

:func:`create_app` builds it for an engine (``sagaline api`` serves it with uvicorn):

- ``POST /sagas/{name}``, ``GET /sagas``, ``GET /sagas/{id}``, ``POST /sagas/{id}/cancel``
  and ``GET /sagas/{id}/events`` (:mod:`~sagaline.api.routes`), each needing a token
  (:mod:`~sagaline.api.auth`);
- ``GET /definitions``, ``GET /definitions/{name}`` and ``GET /stuck``
  (:mod:`~sagaline.api.overview`), each needing a token too;
- ``GET /dashboard``, a page that shows them (:mod:`~sagaline.api.dashboard`), without
  one: the page holds no data and asks for a token itself;
- ``GET /healthz`` (the process is up) and ``GET /readyz`` (Redis answers), without one,
  for load balancers and orchestrators;
- ``/docs`` and ``/openapi.json``, without one: they describe the routes, which are the
  same for every app, and no saga or data (``docs=False`` leaves them out).

Every request passes :class:`~sagaline.api.guards.RequestGuard`; every error is answered
in one shape (:mod:`~sagaline.api.problems`).
"""

from __future__ import annotations

import asyncio
import logging
from importlib.metadata import PackageNotFoundError, version

import redis
from fastapi import APIRouter, Depends, FastAPI
from fastapi.responses import JSONResponse

from sagaline.api.auth import NO_TOKENS, TokenSet, bearer_guard
from sagaline.api.bodies import Health, Problem
from sagaline.api.dashboard import install_dashboard
from sagaline.api.guards import MAX_BODY_BYTES, RequestGuard
from sagaline.api.overview import OverviewRoutes
from sagaline.api.problems import install
from sagaline.api.routes import SagaRoutes
from sagaline.engine import Sagaline
from sagaline.errors import ConfigurationError

log = logging.getLogger("sagaline.api")

READY_TIMEOUT_S = 2.0
"""How long ``/readyz`` waits for Redis to answer a ping."""

_DESCRIPTION = (
    "Start sagas and follow them: their status, steps and compensations, live as "
    "server-sent events. Every route but the health checks needs a token: "
    "`Authorization: Bearer <token>`. Answers are the JSON the `sagaline` command prints "
    "with `--json`; errors are `{detail, errors}`.")


def create_app(engine: Sagaline, tokens: TokenSet, *, docs: bool = True,
               max_body_bytes: int = MAX_BODY_BYTES, dashboard: bool = True) -> FastAPI:
    """Build the API for ``engine``, open to the holders of ``tokens``.

    Args:
        engine: The engine whose sagas it starts and shows.
        tokens: The tokens it accepts (:meth:`TokenSet.configured` reads them).
        docs: Whether to serve ``/docs`` and ``/openapi.json``.
        max_body_bytes: The largest request body accepted (larger ones get 413).
        dashboard: Whether to serve the dashboard page at ``/dashboard``.

    Returns:
        The FastAPI app; serve it with any ASGI server (``sagaline api`` uses uvicorn).

    Raises:
        ConfigurationError: ``tokens`` is empty: the API would serve anyone; or the
            dashboard's files are missing.

    Example:
        >>> app = create_app(engine, TokenSet.configured(settings, os.environ))
        >>> uvicorn.run(app, host="127.0.0.1", port=8000)
    """
    if not len(tokens):
        raise ConfigurationError(NO_TOKENS)
    app = FastAPI(title="Sagaline", version=_version(), description=_DESCRIPTION,
                  docs_url="/docs" if docs else None, redoc_url=None,
                  openapi_url="/openapi.json" if docs else None)
    install(app)
    app.add_middleware(RequestGuard, max_bytes=max_body_bytes)
    app.include_router(health_routes(engine))
    app.include_router(SagaRoutes(engine).router(), dependencies=[Depends(bearer_guard(tokens))],
                       responses={401: {"model": Problem, "description": "No valid token."}})
    app.include_router(OverviewRoutes(engine).router(in_schema=True),
                       dependencies=[Depends(bearer_guard(tokens))])
    if dashboard:
        install_dashboard(app)
    return app


def health_routes(engine: Sagaline) -> APIRouter:
    """``/healthz`` and ``/readyz``, open to all: they tell nothing but up or not.

    Args:
        engine: The engine whose Redis ``/readyz`` pings.

    Returns:
        The router.
    """
    router = APIRouter(tags=["health"])

    @router.get("/healthz", summary="Whether the process is up")
    async def healthz() -> Health:
        """Answers 200 while the process serves requests; it reads nothing."""
        return Health(status="ok")

    @router.get("/readyz", summary="Whether the saga store answers", response_model=Health,
                responses={503: {"model": Health, "description": "Redis does not answer."}})
    async def readyz() -> JSONResponse:
        """Answers 200 when Redis answers a ping within two seconds, 503 otherwise."""
        try:
            await asyncio.wait_for(asyncio.to_thread(engine.store.client.ping),
                                   READY_TIMEOUT_S)
        except (redis.RedisError, OSError, TimeoutError) as error:
            log.warning("not ready: Redis did not answer a ping: %r", error)
            down = Health(status="unavailable", detail="the saga store (Redis) does not answer")
            return JSONResponse(down.model_dump(), status_code=503)
        return JSONResponse(Health(status="ready").model_dump())

    return router


def _version() -> str:
    try:
        return version("sagaline")
    except PackageNotFoundError:
        return "0"
