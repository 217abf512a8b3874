"""``sagaline graph NAME``: a saga's definition drawn as a Mermaid flowchart, or as JSON.

Registered on :data:`sagaline.cli.app.cli`. It reads the definition only (the app module's
registry), never Redis; :mod:`sagaline.diagram` draws it.
"""

from __future__ import annotations

from typing import Annotated

import typer

from sagaline.cli.app import cli, fail, print_json, project
from sagaline.diagram import diagram, to_mermaid
from sagaline.errors import UnknownSagaError


@cli.command()
def graph(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="The saga to draw.")],
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print the diagram's nodes and edges as JSON (the dashboard's form) "
                       "instead of Mermaid.")] = False,
) -> None:
    """Print saga NAME's definition as a Mermaid flowchart.

    It shows the steps in order, parallel groups, fallbacks, pivots, child sagas, and the
    compensations with the rollback's reverse edges. Paste it into any Mermaid renderer
    (GitHub and GitLab render ```mermaid blocks). Exits 2 when no saga is named NAME (the
    message lists the registered ones).
    """
    engine = project(ctx).engine
    if name in engine.choreographies:
        fail(2, f"{name!r} is a choreography: it has no orchestrated steps to draw; "
                f"'sagaline sagas {name}' shows its reactions")
    try:
        saga = engine.registry.get(name)
    except UnknownSagaError as error:
        fail(2, str(error))
    if as_json:
        print_json(diagram(saga).as_dict())
        return
    typer.echo(to_mermaid(saga), nl=False)

