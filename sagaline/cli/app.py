"""The ``sagaline`` Typer app and what its commands share.

It holds the app object :data:`cli` with its root callback (the ``--app`` option), the
consoles, how the app module is loaded, and the helpers the command modules use to fail,
parse input and print runs. It defines no command itself and imports no other module of
:mod:`sagaline.cli`: the command modules import it, never the other way round.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from dataclasses import dataclass
from datetime import datetime
from types import ModuleType
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from sagaline.engine import Sagaline
from sagaline.outcome import OperationRun, SagaRun
from sagaline.status import SagaStatus, StepStatus

DEFAULT_APP = "config"
"""The app module used when neither ``--app`` nor ``SAGALINE_APP`` names one."""

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
"""The Typer app; the command modules register their commands on it."""


def _console(*, stderr: bool = False) -> Console:
    # Piped output has no terminal width; rather than squeeze tables into 80 columns, let
    # them be as wide as they need (COLUMNS still wins when set).
    stream = sys.stderr if stderr else sys.stdout
    wide = not stream.isatty() and "COLUMNS" not in os.environ
    return Console(stderr=stderr, soft_wrap=True, width=200 if wide else None)


out = _console()
"""The console for results, on stdout."""
err = _console(stderr=True)
"""The console for errors, on stderr."""

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
"""The ``--json`` option of the commands that can print JSON instead of tables."""


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


def printable(text: str) -> str:
    r"""``text`` with control characters but newlines shown as escapes (``\r``, ``\x1b``).

    What a user typed (a field name, a saga id) reaches the terminal as text: never as a
    carriage return that hides the line, or an escape sequence the terminal runs.
    """
    return "".join(ch if ch == "\n" or ch.isprintable() else repr(ch)[1:-1] for ch in text)


def error(message: str) -> None:
    """Print ``error: message`` to stderr, in red, control characters escaped."""
    err.print(f"error: {printable(message)}", style="red", markup=False, highlight=False)


def fail(code: int, message: str) -> NoReturn:
    """Print ``message`` to stderr and exit.

    Args:
        code: The exit code: 1 for a failure, 2 for bad usage or input.
        message: What went wrong, printed after ``error:``.

    Raises:
        typer.Exit: Always, with ``code``.
    """
    error(message)
    raise typer.Exit(code)


def load_project(name: str) -> Project:
    """Import the app module ``name`` and check it has ``app`` and ``engine``.

    Args:
        name: The module's dotted name.

    Returns:
        The module with its Celery app and engine. Exits 2 when there is no such module
        or it lacks either, 1 when importing it fails.
    """
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


def app_module(ctx: typer.Context) -> str:
    """The app module's name the root callback stored, as given to ``--app``.

    Args:
        ctx: The command's context.

    Returns:
        The module's dotted name (:data:`DEFAULT_APP` when none was stored).
    """
    return str(ctx.obj or DEFAULT_APP)


def project(ctx: typer.Context) -> Project:
    """Load the project named by ``--app`` (or ``SAGALINE_APP``, else ``config``).

    Args:
        ctx: The command's context; the root callback stored the module's name in it.

    Returns:
        The loaded project (see :func:`load_project`).
    """
    return load_project(app_module(ctx))


def parse_inputs(raw: str) -> dict[str, Any]:
    """Parse the ``--input`` value as a JSON object; exit 2 when it is not one.

    Args:
        raw: The option's value, or ``-`` to read it from stdin.

    Returns:
        The inputs.
    """
    try:
        text = _read_stdin() if raw == "-" else raw
    except UnicodeDecodeError as error:
        fail(2, f"--input on stdin is not UTF-8 text ({error}); pass JSON in UTF-8")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        fail(2, f"--input is not valid JSON ({error}); pass an object such as "
                "'{\"customer_id\": \"CUST-123\"}'")
    except RecursionError:
        fail(2, "--input is nested too deeply to read; flatten it")
    except ValueError as error:  # valid JSON Python will not read, such as a huge number
        fail(2, f"--input cannot be read: {error}")
    if not isinstance(value, dict):
        fail(2, f"--input must be a JSON object, not {type(value).__name__}")
    return value


def _read_stdin() -> str:
    """Standard input as UTF-8 text, strictly, whatever the locale says."""
    buffer = getattr(sys.stdin, "buffer", None)
    if buffer is None:
        return sys.stdin.read()
    data: bytes = buffer.read()
    return data.decode("utf-8")


def print_json(value: Any) -> None:
    """Print a value as indented JSON to stdout.

    Args:
        value: Anything :func:`json.dumps` takes.
    """
    typer.echo(json.dumps(value, indent=2, ensure_ascii=False))


def when(moment: datetime | None) -> str:
    """Format a moment in local time for a table cell.

    Args:
        moment: The moment, or ``None``.

    Returns:
        ``YYYY-MM-DD HH:MM:SS`` in local time, or ``""`` for ``None``.
    """
    return "" if moment is None else moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def status_text(status: SagaStatus) -> Text:
    """A saga status as text, coloured by what it means (green completed, red failed...).

    Args:
        status: The saga's status.

    Returns:
        The status's value, styled.
    """
    return Text(status.value, style=_STATUS_STYLES.get(status, ""))


def run_header(run: SagaRun) -> Table:
    """The run's identity and outcome, one fact a row.

    Args:
        run: The saga run.

    Returns:
        A two-column grid; facts the run does not have are left out.
    """
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    rows: list[tuple[str, str | Text | None]] = [
        ("saga", run.saga_id), ("name", run.name), ("status", status_text(run.status)),
        ("correlation", run.correlation_id), ("causation", run.causation_id),
        ("created", when(run.created_at)), ("ended", when(run.ended_at) or None),
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
    """The run's steps in forward order, with their compensations.

    Args:
        run: The saga run.

    Returns:
        A table, one step a row.
    """
    table = Table(title="steps", title_justify="left")
    for column in ("#", "step", "status", "attempts", "compensation", "attempts"):
        table.add_column(column, justify="right" if column in ("#", "attempts") else "left")
    for number, step in enumerate(run.steps, start=1):
        undo = step.compensation
        table.add_row(
            str(number), Text(step.name), Text(_with_progress(step)), str(step.attempts),
            Text("—" if undo is None else _with_progress(undo)),
            "" if undo is None else str(undo.attempts),
        )
    return table


def _with_progress(operation: OperationRun) -> str:
    """Its status, and while it runs its latest progress (``running 3/10 (30%) acc=0.9``).

    While it waits for a signal, which one and until when (``waiting for approval until
    2026-12-04 09:00:00``, local time).
    """
    text = operation.status.value
    if operation.status is StepStatus.WAITING and operation.signal:
        until = f" until {when(operation.wait_until)}" if operation.wait_until else ""
        return f"{text} for {operation.signal}{until}"
    progress = operation.progress
    if progress is None or operation.status not in (StepStatus.RUNNING, StepStatus.RETRYING):
        return text
    return f"{text} {progress.describe()}"


def show_run(run: SagaRun, as_json: bool) -> None:
    """Print one run: its summary as JSON, or its header and steps as tables.

    Args:
        run: The saga run.
        as_json: Print JSON instead of tables.
    """
    if as_json:
        print_json(run.summary())
        return
    out.print(run_header(run))
    out.print(steps_table(run))


def runs_table(runs: list[SagaRun]) -> Table:
    """Runs one a row, as listed.

    Args:
        runs: The saga runs, in the order to show them.

    Returns:
        A table of their ids, names, statuses, times and failed steps.
    """
    table = Table()
    for column in ("saga", "name", "status", "created", "ended", "failed step"):
        table.add_column(column, no_wrap=column == "saga")
    for run in runs:
        table.add_row(
            Text(run.saga_id), Text(run.name), status_text(run.status), when(run.created_at),
            when(run.ended_at), Text(run.failed_step or ""),
        )
    return table


def worker_argv(module: str, concurrency: int | None, loglevel: str, queues: str | None,
                hostname: str | None) -> list[str]:
    """The command line of a Celery worker for the app in ``module``.

    Args:
        module: The app module, passed to ``celery -A``.
        concurrency: Worker processes, or ``None`` for the app's setting.
        loglevel: The log level.
        queues: Comma-separated queues to consume, or ``None`` for the app's.
        hostname: The worker's node name, or ``None`` for Celery's default.

    Returns:
        The argv, starting with this Python: a prefork worker with task events on.
    """
    argv = [sys.executable, "-m", "celery", "-A", module, "worker", "--pool=prefork", "-E",
            "-l", loglevel]
    if concurrency is not None:
        argv += ["-c", str(concurrency)]
    if queues:
        argv += ["-Q", queues]
    if hostname:
        argv += ["-n", hostname]
    return argv


def flower_argv(module: str, port: int, address: str) -> list[str]:
    """The command line of Flower for the app in ``module``.

    The credentials are not on it (any user of the machine can read a command line): the
    caller passes them in Flower's environment, as ``FLOWER_BASIC_AUTH``.

    Args:
        module: The app module, passed to ``celery -A``.
        port: The port Flower listens on.
        address: The address Flower listens on.

    Returns:
        The argv, starting with this Python.
    """
    return [sys.executable, "-m", "celery", "-A", module, "flower", f"--port={port}",
            f"--address={address}"]


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
