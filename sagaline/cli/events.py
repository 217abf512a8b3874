"""The event commands of ``sagaline``, registered on :data:`sagaline.cli.app.cli`.

``sagaline events lint`` checks the code (and the events the tests emitted) against the
taxonomy, and the app's sagas against the domains they declare; ``sagaline events list``
shows the taxonomy; ``sagaline trace ID`` prints the causal tree of a flow.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.tree import Tree

from sagaline.cli.app import JsonFlag, cli, err, fail, out, print_json, project
from sagaline.events.canonical import Event
from sagaline.events.lint import lint
from sagaline.events.taxonomy import Taxonomy
from sagaline.events.trace import TraceNode, trace_flow
from sagaline.ids import correlation_id as checked_correlation_id
from sagaline.saga import Saga

events_cli = typer.Typer(help="The event taxonomy: check the code against it, list it.",
                         no_args_is_help=True)
cli.add_typer(events_cli, name="events")

DEFAULT_PATHS = ("sagaline", "sagas", "tasks", "config")
TaxonomyOption = Annotated[Path, typer.Option(
    "--taxonomy", help="The taxonomy file.", dir_okay=False)]


@events_cli.command("lint")
def lint_events(
    ctx: typer.Context,
    paths: Annotated[list[Path] | None, typer.Argument(
        help="Files or folders to check (default: sagaline sagas tasks config).")] = None,
    taxonomy: TaxonomyOption = Path("events.toml"),
    emitted: Annotated[Path | None, typer.Option(
        "--emitted", help="A JSON-lines file of emitted events to check against the "
                          "registered payload schemas (the test session writes one).")] = None,
    check_sagas: Annotated[bool, typer.Option(
        "--sagas/--no-sagas", help="Check that the app's sagas (--app) emit only events of "
                                   "the domains they declare; --no-sagas loads no app.")] = True,
) -> None:
    """Check event names in the code (and emitted events) against the taxonomy.

    Fails (exit 1), naming file and line, on a name that is unregistered or breaks the
    convention, an emitted payload that does not match its registered schema, or a step
    that emits an event of a domain its saga does not declare (``Saga(domains=...)``).
    """
    targets = list(paths) if paths else [Path(p) for p in DEFAULT_PATHS if Path(p).exists()]
    sagas = _registered_sagas(ctx) if check_sagas else []
    problems = lint(taxonomy, targets, emitted, sagas)
    for problem in problems:
        out.print(str(problem), markup=False, highlight=False)
    if problems:
        fail(1, f"{len(problems)} event problem(s); see above")
    checked = f", {emitted}" if emitted else ""
    declaring = sum(1 for saga in sagas if saga.domains is not None)
    domains = f", domains of {declaring} of {len(sagas)} saga(s)" if check_sagas else ""
    out.print(f"events lint: no problems ({taxonomy}, {', '.join(map(str, targets))}"
              f"{checked}{domains})", markup=False, highlight=False)


def _registered_sagas(ctx: typer.Context) -> list[Saga]:
    try:
        return list(project(ctx).engine.registry)
    except typer.Exit:
        err.print("the events lint loads the app to check its sagas' domains; pass --app, "
                  "or --no-sagas to check the code only", markup=False, highlight=False)
        raise


@events_cli.command("list")
def list_events(taxonomy: TaxonomyOption = Path("events.toml"),
                as_json: JsonFlag = False) -> None:
    """List every registered event with its domain and description."""
    registered = Taxonomy.load(taxonomy)
    if as_json:
        print_json([{"name": t.name, "domain": t.domain, "description": t.description,
                     "payload": dict(t.payload)} for t in registered])
        return
    table = Table("event", "domain", "description")
    for event_type in registered:
        table.add_row(event_type.name, event_type.domain, event_type.description)
    out.print(table)


@cli.command()
def trace(
    ctx: typer.Context,
    correlation_id: Annotated[str, typer.Argument(metavar="CORRELATION_ID",
                                                  help="The flow's correlation id.")],
    as_json: JsonFlag = False,
) -> None:
    """Print the causal tree of a flow: its sagas, steps, compensations and events."""
    cid = checked_correlation_id(correlation_id)
    engine = project(ctx).engine
    flow = trace_flow(engine.store, engine.outbox, engine.bus, cid)
    if not flow.saga_ids and not flow.roots:
        fail(1, f"nothing is recorded for correlation id {cid}")
    if as_json:
        print_json({"correlation_id": cid, "sagas": flow.saga_ids,
                    "roots": {str(k): [n.as_dict() for n in v] for k, v in flow.roots.items()}})
        return
    tree = Tree(f"flow {cid}  ({len(flow.saga_ids)} saga(s), {len(flow.events)} events)")
    for cause, nodes in flow.roots.items():
        branch = tree.add(f"caused by {cause}" if cause else "no recorded cause")
        for node in nodes:
            _add(branch, node)
    out.print(tree)


def _add(parent: Tree, node: TraceNode) -> None:
    branch = parent.add(_label(node.event), highlight=False)
    for child in node.children:
        _add(branch, child)


def _label(event: Event) -> str:
    when = datetime.strftime(event.occurred_at, "%H:%M:%S.%f")[:-3]
    payload = event.payload
    what = []
    if event.name.startswith("saga.") and "saga" in payload:
        what.append(f"{payload['saga']} {str(payload.get('saga_id', ''))[:13]}")
    for key in ("step", "attempt", "reason"):
        if key in payload:
            what.append(f"{key}={payload[key]}")
    if "error" in payload and isinstance(payload["error"], dict):
        what.append(f"error={payload['error'].get('message', '')}")
    if not event.name.startswith("saga."):
        what.append(", ".join(f"{k}={v}" for k, v in payload.items()))
    return f"{when}  [bold]{event.name}[/bold]  {' '.join(what)}".rstrip()
