"""The ``sagaline embedded`` commands, registered on :data:`sagaline.cli.app.cli`.

``sagaline embedded status`` shows the embedded Redis of a data folder (running or not, its
pid, memory and keys); ``sagaline embedded stop`` shuts it down. Neither ever starts it, and
neither loads the app: the folder comes from ``--data-dir``, else ``SAGALINE_DATA_DIR``, else
``var`` in the current folder, the app settings' own default (a ``.env`` file is not read:
pass ``--data-dir`` when the folder is set there).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from sagaline.cli.app import JsonFlag, cli, fail, out, print_json
from sagaline.store.embedded import EmbeddedRedis, EmbeddedStatus

DATA_DIR_VARIABLE = "SAGALINE_DATA_DIR"
"""The variable naming the app's data folder, as the app's settings read it."""
DEFAULT_DATA_DIR = "var"
"""The data folder when nothing names one: ``var`` in the current folder, as in the settings."""

embedded_cli = typer.Typer(
    help="The embedded Redis (started when no SAGALINE_REDIS_URL is set): see it, stop it.",
    no_args_is_help=True)
cli.add_typer(embedded_cli, name="embedded")

DataDirOption = Annotated[Path | None, typer.Option(
    "--data-dir", metavar="DIR", file_okay=False,
    help=f"The app's data folder (default: ${DATA_DIR_VARIABLE}, else ./{DEFAULT_DATA_DIR}); "
         "the server lives in its redis/ subfolder.")]


def data_dir(given: Path | None) -> Path:
    """The app's data folder: ``given``, else ``$SAGALINE_DATA_DIR``, else ``./var``.

    Args:
        given: The ``--data-dir`` option's value, if any.

    Returns:
        The folder, absolute.
    """
    folder = given or Path(os.environ.get(DATA_DIR_VARIABLE) or DEFAULT_DATA_DIR)
    return folder.resolve()


def describe(folder: Path, server: EmbeddedRedis, status: EmbeddedStatus) -> dict[str, Any]:
    """The status as ``--json`` prints it.

    Args:
        folder: The app's data folder.
        server: Its embedded Redis.
        status: What :meth:`EmbeddedRedis.status` found.

    Returns:
        ``running``, ``data_dir``, ``redis_dir``, ``socket``, ``pid``, ``used_memory``
        (bytes) and ``keys``; the last three are ``null`` when it is not running.
    """
    return {"running": status.running, "data_dir": str(folder),
            "redis_dir": str(server.data_dir.resolve()), "socket": str(server.socket_path),
            "pid": status.pid, "used_memory": status.used_memory, "keys": status.keys}


@embedded_cli.command("status")
def show_status(given: DataDirOption = None, as_json: JsonFlag = False) -> None:
    """Show the embedded Redis of the data folder: running or not, pid, memory, keys.

    Never starts it; exits 0 whether it runs or not.
    """
    folder = data_dir(given)
    server = EmbeddedRedis.for_app(folder)
    facts = describe(folder, server, server.status())
    if as_json:
        print_json(facts)
        return
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    running = facts["running"]
    grid.add_row("status", Text("running" if running else "not running",
                                style="green" if running else "yellow"))
    for key in ("redis_dir", "socket", "pid", "used_memory", "keys"):
        if facts[key] is not None:
            value = _mebibytes(facts[key]) if key == "used_memory" else str(facts[key])
            grid.add_row(key.replace("_", " "), Text(value))
    out.print(grid)
    if os.environ.get("SAGALINE_REDIS_URL"):
        out.print("SAGALINE_REDIS_URL is set: the app uses that Redis, not this one.",
                  markup=False, highlight=False)
    elif running:
        out.print(f"It keeps running until: sagaline embedded stop --data-dir {folder}",
                  markup=False, highlight=False)


@embedded_cli.command("stop")
def stop(given: DataDirOption = None, as_json: JsonFlag = False) -> None:
    """Stop the embedded Redis of the data folder, if it runs (its data is kept).

    Never starts it. The next command that needs Redis starts it again. Exits 1 if it
    would not stop.
    """
    folder = data_dir(given)
    server = EmbeddedRedis.for_app(folder)
    before = server.status()
    if before.running:
        server.stop()
        if server.is_running():
            fail(1, f"the embedded Redis (pid {before.pid}) did not stop; see "
                    f"{server.data_dir / 'redis.log'}, or kill {before.pid}")
    if as_json:
        print_json({"stopped": before.running, "pid": before.pid, "data_dir": str(folder)})
    elif before.running:
        out.print(f"Stopped the embedded Redis (pid {before.pid}) in {server.data_dir}; its "
                  "data stays in the append-only file there, and the next command that "
                  "needs Redis starts it again.", markup=False, highlight=False)
    else:
        out.print(f"No embedded Redis runs in {server.data_dir}: nothing to stop.",
                  markup=False, highlight=False)


def _mebibytes(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"
