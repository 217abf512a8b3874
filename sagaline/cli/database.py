"""``sagaline db``: bring the app's SQL schema up to date with its Alembic migrations.

Registered on :data:`sagaline.cli.app.cli`. It runs Alembic with the project's
``alembic.ini`` (or ``--config``), exactly as ``alembic upgrade head`` would; it never loads
the app, so it works before the schema exists.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from alembic import command
from alembic.config import Config
from alembic.util.exc import CommandError

from sagaline.cli.app import cli, fail, out

db_cli = typer.Typer(help="The app's SQL schema: apply its migrations, show its revision.",
                     no_args_is_help=True)
cli.add_typer(db_cli, name="db")

ConfigOption = Annotated[Path, typer.Option(
    "--config", "-c", help="The Alembic configuration file.", dir_okay=False)]


def alembic_config(path: Path) -> Config:
    """The Alembic configuration at ``path``; exits 2 when there is none."""
    if not path.is_file():
        fail(2, f"no Alembic configuration at {path}; run from the project's folder or pass "
                "--config PATH")
    return Config(str(path))


@db_cli.command("upgrade")
def upgrade(
    revision: Annotated[str, typer.Argument(help="The revision to reach.")] = "head",
    config: ConfigOption = Path("alembic.ini"),
) -> None:
    """Apply every migration up to REVISION (default: the newest), as Alembic does."""
    try:
        command.upgrade(alembic_config(config), revision)
    except CommandError as error:
        fail(1, f"the migrations could not be applied: {error}")
    out.print(f"database schema at {revision}")


@db_cli.command("current")
def current(config: ConfigOption = Path("alembic.ini")) -> None:
    """Print the revision the database is at."""
    try:
        command.current(alembic_config(config), verbose=False)
    except CommandError as error:
        fail(1, f"the revision could not be read: {error}")
