"""The ``sagaline`` command line: run a worker, start and inspect sagas, run the demo.

It finds the project the way ``celery -A`` does: ``--app MODULE`` (or ``SAGALINE_APP``,
else ``config``) names a module with an ``app`` (the Celery app) and an ``engine`` (the
:class:`~sagaline.Sagaline`). The module is imported only by the commands that need it,
so ``sagaline --help`` needs no Redis.

Exit codes: 0 success (a saga completed, or was started); 1 a saga ended otherwise, a
wait timed out, a saga was not found, or Redis failed; 2 bad usage or invalid input.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from types import ModuleType
from typing import Annotated, Any, NoReturn

import redis
import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from . import demo as demos
from .engine import SagaHandle, Sagaline
from .errors import (
    InvalidCorrelationIdError,
    InvalidInputError,
    SagaError,
    UnknownSagaError,
)
from .record import SagaRun
from .status import SagaStatus

DEFAULT_APP = "config"
"""The app module used when neither ``--app`` nor ``SAGALINE_APP`` names one."""

_USAGE_ERRORS = (InvalidInputError, InvalidCorrelationIdError, UnknownSagaError)
_STATUS_STYLES = {
    SagaStatus.RUNNING: "cyan", SagaStatus.COMPENSATING: "yellow",
    SagaStatus.COMPLETED: "green", SagaStatus.COMPENSATED: "yellow",
    SagaStatus.COMPENSATION_FAILED: "bold red", SagaStatus.FAILED: "red",
    SagaStatus.CANCELLED: "magenta", SagaStatus.NEEDS_ATTENTION: "bold magenta",
}

cli = typer.Typer(
    name="sagaline",
    help="Sagas on Celery: run a worker, start and inspect sagas, or run the demo.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # locals may hold a Redis URL with its password
)


def _console(*, stderr: bool = False) -> Console:
    # Piped output has no terminal width; rather than squeeze tables into 80 columns, let
    # them be as wide as they need (COLUMNS still wins when set).
    stream = sys.stderr if stderr else sys.stdout
    wide = not stream.isatty() and "COLUMNS" not in os.environ
    return Console(stderr=stderr, soft_wrap=True, width=200 if wide else None)


out = _console()
err = _console(stderr=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]


@dataclass(frozen=True)
class Project:
    """The loaded app module, its Celery app and its engine."""

    name: str
    """The module's dotted name, as given to ``--app``."""
    module: ModuleType
    """The module itself."""
    app: Any
    """Its Celery app."""
    engine: Sagaline
    """Its saga engine."""


def fail(code: int, message: str) -> NoReturn:
    """Print ``message`` to stderr and exit with ``code``."""
    err.print(f"error: {message}", style="red", markup=False, highlight=False)
    raise typer.Exit(code)


def load_project(name: str) -> Project:
    """Import the app module ``name`` and check it has ``app`` and ``engine``."""
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name and (name == error.name or name.startswith(f"{error.name}.")):
            fail(2, f"no module named {name!r}; pass the app module with --app (or "
                    "SAGALINE_APP), and run from the project's folder")
        fail(1, f"cannot load the app {name!r}: {error}")
    except Exception as error:
        fail(1, f"cannot load the app {name!r}: {type(error).__name__}: {error}")
    engine = getattr(module, "engine", None)
    if getattr(module, "app", None) is None or not isinstance(engine, Sagaline):
        fail(2, f"the module {name!r} must define 'app' (a Celery app) and 'engine' "
                "(a sagaline.Sagaline)")
    return Project(name, module, module.app, engine)


def _project(ctx: typer.Context) -> Project:
    return load_project(str(ctx.obj or DEFAULT_APP))


def parse_inputs(raw: str) -> dict[str, Any]:
    """The ``--input`` value as a JSON object (``-`` reads it from stdin)."""
    text = sys.stdin.read() if raw == "-" else raw
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        fail(2, f"--input is not valid JSON ({error}); pass an object such as "
                "'{\"customer_id\": \"CUST-123\"}'")
    if not isinstance(value, dict):
        fail(2, f"--input must be a JSON object, not {type(value).__name__}")
    return value


def print_json(value: Any) -> None:
    """Print a value as indented JSON to stdout."""
    typer.echo(json.dumps(value, indent=2, ensure_ascii=False))


def _when(moment: datetime | None) -> str:
    return "" if moment is None else moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _status(status: SagaStatus) -> Text:
    return Text(status.value, style=_STATUS_STYLES.get(status, ""))


def run_header(run: SagaRun) -> Table:
    """The run's identity and outcome, one fact a row."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    rows: list[tuple[str, str | Text | None]] = [
        ("saga", run.saga_id), ("name", run.name), ("status", _status(run.status)),
        ("correlation", run.correlation_id), ("causation", run.causation_id),
        ("created", _when(run.created_at)), ("ended", _when(run.ended_at) or None),
        ("failed step", run.failed_step),
        ("error", None if run.error is None else f"{run.error.type}: {run.error.message}"),
        ("result", None if run.result is None else json.dumps(run.result)),
        ("compensations", " → ".join(run.compensations) or None),
        ("left in place", ", ".join(run.undone) or None),
    ]
    for key, value in rows:
        if value is not None:
            grid.add_row(key, value if isinstance(value, Text) else Text(value))
    return grid


def steps_table(run: SagaRun) -> Table:
    """The run's steps in forward order, with their compensations."""
    table = Table(title="steps", title_justify="left")
    for column in ("#", "step", "status", "attempts", "compensation", "attempts"):
        table.add_column(column, justify="right" if column in ("#", "attempts") else "left")
    for number, step in enumerate(run.steps, start=1):
        undo = step.compensation
        table.add_row(
            str(number), Text(step.name), Text(step.status.value), str(step.attempts),
            Text("—" if undo is None else undo.status.value),
            "" if undo is None else str(undo.attempts),
        )
    return table


def show_run(run: SagaRun, as_json: bool) -> None:
    """Print one run: its summary JSON, or tables."""
    if as_json:
        print_json(run.summary())
        return
    out.print(run_header(run))
    out.print(steps_table(run))


def runs_table(runs: list[SagaRun]) -> Table:
    """Runs one a row, as listed."""
    table = Table()
    for column in ("saga", "name", "status", "created", "ended", "failed step"):
        table.add_column(column, no_wrap=column == "saga")
    for run in runs:
        table.add_row(
            Text(run.saga_id), Text(run.name), _status(run.status), _when(run.created_at),
            _when(run.ended_at), Text(run.failed_step or ""),
        )
    return table


def worker_argv(module: str, concurrency: int | None, loglevel: str, queues: str | None,
                hostname: str | None) -> list[str]:
    """The command line of a Celery worker for the app in ``module``."""
    argv = [sys.executable, "-m", "celery", "-A", module, "worker", "--pool=prefork", "-E",
            "-l", loglevel]
    if concurrency is not None:
        argv += ["-c", str(concurrency)]
    if queues:
        argv += ["-Q", queues]
    if hostname:
        argv += ["-n", hostname]
    return argv


@cli.callback()
def root(
    ctx: typer.Context,
    app: Annotated[str, typer.Option(
        "--app", "-A", envvar="SAGALINE_APP", metavar="MODULE",
        help="The module with the Celery 'app' and the saga 'engine'.",
    )] = DEFAULT_APP,
) -> None:
    """Sagas on Celery: run a worker, start and inspect sagas, or run the demo."""
    ctx.obj = app


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
    argv = worker_argv(str(ctx.obj or DEFAULT_APP), concurrency, loglevel, queues, hostname)
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
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the final state.")] = False,
    timeout: Annotated[float, typer.Option(
        "--timeout", min=0.0, help="Seconds to wait, with --wait.",
    )] = 60.0,
    as_json: JsonFlag = False,
) -> None:
    """Start saga NAME; with --wait, wait for its outcome (exit 0 only if it completed)."""
    inputs = parse_inputs(input_)
    handle: SagaHandle = _project(ctx).engine.start(name, inputs, correlation_id=correlation_id)
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
    show_run(_project(ctx).engine.get(saga_id), as_json)


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
    runs = _project(ctx).engine.list(status, limit=limit)
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
    project = _project(ctx)
    embedded = demos.embedded_started_since(getattr(project.module, "settings", None), since)
    try:
        ok = _demo(project)
    finally:
        if embedded is not None:
            out.print("Stopping the embedded Redis...", markup=False, highlight=False)
            embedded.stop()
    raise typer.Exit(0 if ok else 1)


def _demo(project: Project) -> bool:
    try:
        scenarios = demos.load_scenarios(project.name)
    except TypeError as error:
        fail(2, str(error))
    if not scenarios:
        fail(2, f"the app {project.name!r} has no demo: add {project.name}.demo with "
                "SCENARIOS, a list of sagaline.demo.DemoScenario")
    try:
        return demos.run_demo(project.name, project.app, project.engine, scenarios, out)
    except RuntimeError as error:  # the worker did not start
        fail(1, str(error))


def main() -> None:
    """Run the command line; Sagaline's and Redis's errors become messages and exit codes."""
    from . import cli_events, cli_sagas, cli_supervise  # noqa: F401 - register commands

    try:
        cli()
    except _USAGE_ERRORS as error:
        err.print(f"error: {error}", style="red", markup=False, highlight=False)
        sys.exit(2)
    except SagaError as error:
        err.print(f"error: {error}", style="red", markup=False, highlight=False)
        sys.exit(1)
    except redis.RedisError as error:
        err.print(f"error: Redis failed: {error}", style="red", markup=False, highlight=False)
        sys.exit(1)


if __name__ == "__main__":
    # Run the importable module's main, on whose ``cli`` the supervision commands register.
    from sagaline.cli import main as _main

    _main()
