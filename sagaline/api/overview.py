"""The read-only views the dashboard needs besides ``/sagas``: definitions and stuck sagas.

- ``GET /definitions``: every registered saga, by name: its description, inputs, steps;
- ``GET /definitions/{name}``: one saga's definition (what ``sagaline sagas NAME --json``
  prints), its diagram as data (what ``sagaline graph NAME --json`` prints) and as
  Mermaid text (what ``sagaline graph NAME`` prints);
- ``GET /stuck``: the sagas past their attention time or deadline, or waiting for an
  operator (what ``sagaline stuck --json`` prints).

They read definitions, or Redis as the supervisor does; they change nothing.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path
from fastapi.responses import JSONResponse

from sagaline.diagram import diagram, to_mermaid
from sagaline.engine import Sagaline

SagaName = Annotated[str, Path(max_length=200, description="The saga's registered name.")]


class OverviewRoutes:
    """``/definitions`` and ``/stuck`` on one engine (:meth:`router` builds them)."""

    def __init__(self, engine: Sagaline) -> None:
        """Serve the definitions and the stuck sagas of ``engine``."""
        self.engine = engine

    def router(self, *, in_schema: bool = False) -> APIRouter:
        """The routes, for the API to include behind its token check.

        Args:
            in_schema: Whether ``/openapi.json`` and ``/docs`` list them.
        """
        router = APIRouter(tags=["dashboard"])
        router.add_api_route("/definitions", self.list_definitions, methods=["GET"],
                             summary="List the registered sagas", include_in_schema=in_schema)
        router.add_api_route("/definitions/{name}", self.get_definition, methods=["GET"],
                             summary="Show a saga's definition and its diagram",
                             include_in_schema=in_schema)
        router.add_api_route("/stuck", self.list_stuck, methods=["GET"],
                             summary="List the sagas that need attention",
                             include_in_schema=in_schema)
        return router

    def list_definitions(self) -> JSONResponse:
        """Every registered saga by name: description, input model, steps in order."""
        registry = self.engine.registry
        listed: list[dict[str, Any]] = []
        for name in registry.names():
            about = registry.describe(name)
            listed.append({"name": about.name, "description": about.description,
                           "inputs": about.inputs, "steps": [s.name for s in about.steps],
                           "groups": [g.name for g in about.groups]})
        return JSONResponse(listed)

    def get_definition(self, name: SagaName) -> JSONResponse:
        """The saga `name`: its definition, its diagram (nodes, edges, groups) and Mermaid.

        An unknown name is answered 404, listing the registered ones.
        """
        registry = self.engine.registry
        saga = registry.get(name)
        return JSONResponse({"name": saga.name,
                             "definition": registry.describe(name).model_dump(mode="json"),
                             "graph": diagram(saga).as_dict(),
                             "mermaid": to_mermaid(saga)})

    def list_stuck(self) -> JSONResponse:
        """Sagas past their lease, hand-off or deadline, or waiting for an operator.

        Most overdue first, each with what it waits on (`sagaline stuck --json`).
        """
        stuck = self.engine.supervisor.stuck()
        return JSONResponse([s.model_dump(mode="json") for s in stuck])
