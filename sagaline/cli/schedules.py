"""``sagaline schedules``: the sagas beat starts on a schedule, with when each is next due.

Registered on :data:`sagaline.cli.app.cli`. It reads the app module's ``schedules`` (what
:func:`~sagaline.schedules.install_schedules` returned), never Redis, and needs no worker.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import typer
from rich.table import Table
from rich.text import Text

from sagaline.cli.app import JsonFlag, cli, fail, out, print_json, project, when
from sagaline.schedules import Schedule, iso, next_due, utc_now


@cli.command("schedules")
def list_schedules(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """List the sagas beat starts on a schedule, with when each is next due.

    Each firing starts its saga once, keyed ``schedule:<name>:<due time>``. Exits 2 when
    the app module's ``schedules`` is not a list of schedules.
    """
    loaded = project(ctx)
    declared = getattr(loaded.module, "schedules", ())
    if not isinstance(declared, Sequence) or not all(isinstance(s, Schedule)
                                                      for s in declared):
        fail(2, f"'schedules' of the module {loaded.name!r} must be a list of "
                "sagaline.Schedule; export what install_schedules returns")
    now = utc_now()
    listed = [describe(schedule, now) for schedule in declared]
    if as_json:
        print_json(listed)
        return
    if not listed:
        out.print(f"no schedules: the module {loaded.name!r} exports none (export what "
                  "install_schedules returns as 'schedules')")
        return
    out.print(_table(declared, now))


def describe(schedule: Schedule, now: datetime) -> dict[str, Any]:
    """A schedule as ``--json`` prints it.

    Args:
        schedule: The schedule.
        now: The moment its next due time is counted from.

    Returns:
        ``name``, ``saga``, ``cron`` or ``every`` (seconds), ``inputs``, ``enabled``,
        ``next_due`` (UTC, ISO 8601; ``null`` when disabled), ``next_due_local``,
        ``next_key`` (the idempotency key of that firing) and ``description``.
    """
    due = next_due(schedule, now) if schedule.enabled else None
    return {
        "name": schedule.name, "saga": schedule.saga, "cron": schedule.cron,
        "every": None if schedule.every is None else schedule.every.total_seconds(),
        "inputs": dict(schedule.inputs), "due_input": schedule.due_input,
        "enabled": schedule.enabled,
        "next_due": None if due is None else iso(due),
        "next_due_local": None if due is None else due.astimezone().isoformat(),
        "next_key": None if due is None else schedule.key(due),
        "description": schedule.description,
    }


def _table(declared: Sequence[Schedule], now: datetime) -> Table:
    table = Table()
    for column in ("schedule", "saga", "when", "next due (local)", "next due (UTC)",
                   "enabled", "description"):
        table.add_column(column)
    for schedule in declared:
        due = next_due(schedule, now) if schedule.enabled else None
        table.add_row(
            Text(schedule.name), Text(schedule.saga), Text(schedule.when),
            when(due) or "—", "—" if due is None else iso(due),
            Text("yes", style="green") if schedule.enabled else Text("no", style="yellow"),
            Text(schedule.description))
    return table
