"""The run commands of ``sagaline``, registered on :data:`sagaline.cli.app.cli`.

worker, flower, run, status, list and demo.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated, Any

import typer

from sagaline.cli import demo as demos
from sagaline.cli.app import (
    JsonFlag,
    Project,
    app_module,
    cli,
    fail,
    flower_argv,
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

FLOWER_AUTH_VARIABLE = "SAGALINE_FLOWER_BASIC_AUTH"
"""Where ``sagaline flower`` finds its credentials when the app's settings have none."""
FLOWER_PORT = 5555
"""The port Flower listens on when neither ``--port`` nor the app's settings name one."""
FLOWER_ADDRESS = "127.0.0.1"
"""The address Flower listens on when neither ``--address`` nor the settings name one."""


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
def flower(
    ctx: typer.Context,
    port: Annotated[int | None, typer.Option(
        "--port", min=1, max=65535,
        help="The port to listen on (default: the settings' flower_port, else 5555).",
    )] = None,
    address: Annotated[str | None, typer.Option(
        "--address", help="The address to listen on (default: the settings' flower_address, "
        "else 127.0.0.1; 0.0.0.0 serves other machines).",
    )] = None,
) -> None:
    """Run Flower for the app, behind basic auth: celery -A MODULE flower.

    The credentials, user:password (comma-separated for several), come from the app's
    settings (flower_basic_auth) or SAGALINE_FLOWER_BASIC_AUTH; without them Flower is not
    started. They reach Flower in its environment, never on its command line.
    """
    loaded = project(ctx)
    settings = getattr(loaded.module, "settings", None)
    credentials = _flower_credentials(settings)
    argv = flower_argv(loaded.name, port or getattr(settings, "flower_port", None) or FLOWER_PORT,
                       address or getattr(settings, "flower_address", None) or FLOWER_ADDRESS)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, argv, {**os.environ, "FLOWER_BASIC_AUTH": credentials})


def _flower_credentials(settings: Any) -> str:
    """Flower's ``user:password`` list, from the settings or the environment; exits 2 if none."""
    secret: Any = getattr(settings, "flower_basic_auth", None)
    raw = secret.get_secret_value() if hasattr(secret, "get_secret_value") else secret
    raw = str(raw or os.environ.get(FLOWER_AUTH_VARIABLE, ""))
    entries = [entry.strip() for entry in raw.split(",") if entry.strip()]
    if not entries:
        fail(2, "Flower would let anyone who reaches it see and revoke tasks, so it does not "
                f"start without a login: set {FLOWER_AUTH_VARIABLE}=user:password "
                "(comma-separated for several) and run sagaline flower again")
    if not all(user and password for user, _, password in (e.partition(":") for e in entries)):
        fail(2, f"{FLOWER_AUTH_VARIABLE} must be user:password (comma-separated for several), "
                "each with a user and a password; fix it and run sagaline flower again")
    return ",".join(entries)


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
    idempotency_key: Annotated[str | None, typer.Option(
        "--idempotency-key", help="Start it once: a repeat with this key prints the first "
        "run's id and starts nothing.",
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
                                                   causation_id=causation_id,
                                                   idempotency_key=idempotency_key)
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
def run_demo(
    ctx: typer.Context,
    reset: Annotated[bool, typer.Option(
        "--reset", help="Put the example data back as first seeded (the README's examples "
        "run on it) and run no scenario.",
    )] = False,
) -> None:
    """Run the app's demo sagas on a real worker, printing each step as it happens.

    Starts the embedded Redis if needed and a worker, and stops both afterwards; puts the
    example data it spent back as it found it. Exits 0 if every scenario ended as it should.
    """
    loaded = project(ctx)
    try:
        demo = demos.load_demo(loaded.name)
    except TypeError as error:
        fail(2, str(error))
    if not demo or not demo[0]:
        fail(2, f"the app {loaded.name!r} has no demo: add {loaded.name}.demo with "
                "SCENARIOS, a list of sagaline.demo.DemoScenario")
    scenarios, data = demo
    if reset:
        if data is None:
            fail(2, f"{loaded.name}.demo has no DATA (a sagaline.cli.demo.DemoData) to reset")
        for line in data.reset():
            out.print(line, markup=False, highlight=False)
        return
    embedded = demos.start_embedded(getattr(loaded.module, "settings", None))
    try:
        ok = _demo(loaded, scenarios, data)
    finally:
        if embedded is not None:
            out.print("Stopping the embedded Redis...", markup=False, highlight=False)
            embedded.stop()
    raise typer.Exit(0 if ok else 1)


def _demo(loaded: Project, scenarios: list[demos.DemoScenario],
          data: demos.DemoData | None) -> bool:
    try:
        return demos.run_demo(loaded.name, loaded.app, loaded.engine, scenarios, out, data)
    except RuntimeError as error:  # the worker did not start
        fail(1, str(error))
