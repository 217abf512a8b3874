"""The run commands of ``sagaline``, registered on :data:`sagaline.cli.app.cli`.

worker, run, status, list and demo.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Annotated

import typer

from sagaline.cli import demo as demos
from sagaline.cli.app import (
    JsonFlag,
    Project,
    app_module,
    cli,
    fail,
    out,
    parse_inputs,
    print_json,
    project,
    runs_table,
    show_run,
    worker_argv,
)
from sagaline.engine import SagaHandle
from sagaline.status import SagaStatus


@cli.command()
def worker(
    ctx: typer.Context,
    concurrency: Annotated[int | None, typer.Option(
        "--concurrency", "-c", min=1, help="Worker processes (default: the app's setting).",
    )] = None,
    loglevel: Annotated[str, typer.Option("--loglevel", "-l", help="Log level.")] = "info",
    queues: Annotated[str | None, typer.Option(
        "--queues", "-Q", help="Comma-separated queues to consume (default: the app's).",
    )] = None,
    hostname: Annotated[str | None, typer.Option(
        "--hostname", "-n", help="The worker's node name, like name@%h.",
    )] = None,
) -> None:
    """Run a Celery worker for the app (prefork, task events on): celery -A MODULE worker."""
    argv = worker_argv(app_module(ctx), concurrency, loglevel, queues, hostname)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, argv)


@cli.command()
def run(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The saga's registered name.")],
    input_: Annotated[str, typer.Option(
        "--input", "-i", metavar="JSON", help="The inputs, a JSON object ('-': read stdin).",
    )],
    correlation_id: Annotated[str | None, typer.Option(
        "--correlation-id", help="The business flow's id, a UUID (default: a new one).",
    )] = None,
    causation_id: Annotated[str | None, typer.Option(
        "--causation-id", help="The id (a UUID) of the event or command that caused this run "
        "(default: the start itself).",
    )] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the final state.")] = False,
    timeout: Annotated[float, typer.Option(
        "--timeout", min=0.0, help="Seconds to wait, with --wait.",
    )] = 60.0,
    as_json: JsonFlag = False,
) -> None:
    """Start saga NAME; with --wait, wait for its outcome (exit 0 only if it completed)."""
    inputs = parse_inputs(input_)
    handle: SagaHandle = project(ctx).engine.start(name, inputs, correlation_id=correlation_id,
                                                   causation_id=causation_id)
    if not wait:
        if as_json:
            print_json({"saga_id": handle.saga_id, "correlation_id": handle.correlation_id})
        else:
            typer.echo(handle.saga_id)
        return
    outcome = handle.wait(timeout)
    show_run(outcome, as_json)
    raise typer.Exit(0 if outcome.status is SagaStatus.COMPLETED else 1)


@cli.command()
def status(
    ctx: typer.Context,
    saga_id: Annotated[str, typer.Argument(metavar="ID", help="The saga's id.")],
    as_json: JsonFlag = False,
) -> None:
    """Show one saga: its steps, compensations in order, error and result."""
    show_run(project(ctx).engine.get(saga_id), as_json)


@cli.command("list")
def list_runs(
    ctx: typer.Context,
    status: Annotated[SagaStatus | None, typer.Option(
        "--status", "-s", help="Only sagas in this state.",
    )] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="At most this many.")] = 20,
    as_json: JsonFlag = False,
) -> None:
    """List sagas, newest first."""
    runs = project(ctx).engine.list(status, limit=limit)
    if as_json:
        print_json([r.summary() for r in runs])
    elif not runs:
        out.print("no sagas recorded" + (f" with status {status.value}" if status else ""))
    else:
        out.print(runs_table(runs))


@cli.command("demo")
def run_demo(ctx: typer.Context) -> None:
    """Run the app's demo sagas on a real worker, printing each step as it happens.

    Starts the embedded Redis if needed and a worker, and stops both afterwards. Exits 0
    if every scenario ended as it should.
    """
    since = time.time()
    loaded = project(ctx)
    embedded = demos.embedded_started_since(getattr(loaded.module, "settings", None), since)
    try:
        ok = _demo(loaded)
    finally:
        if embedded is not None:
            out.print("Stopping the embedded Redis...", markup=False, highlight=False)
            embedded.stop()
    raise typer.Exit(0 if ok else 1)


def _demo(loaded: Project) -> bool:
    try:
        scenarios = demos.load_scenarios(loaded.name)
    except TypeError as error:
        fail(2, str(error))
    if not scenarios:
        fail(2, f"the app {loaded.name!r} has no demo: add {loaded.name}.demo with "
                "SCENARIOS, a list of sagaline.demo.DemoScenario")
    try:
        return demos.run_demo(loaded.name, loaded.app, loaded.engine, scenarios, out)
    except RuntimeError as error:  # the worker did not start
        fail(1, str(error))
