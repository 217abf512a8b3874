"""The supervision commands of ``sagaline``, registered on :data:`sagaline.cli.app.cli`.

signal, cancel, stop, resume, recover, stuck, dead-letters and retry-compensation.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from sagaline.cli.app import (
    JsonFlag,
    cli,
    fail,
    out,
    print_json,
    project,
    status_text,
    when,
)
from sagaline.status import SagaStatus

SagaId = Annotated[str, typer.Argument(metavar="ID", help="The saga's id.")]


@cli.command()
def signal(
    ctx: typer.Context,
    saga_id: SagaId,
    name: Annotated[str, typer.Argument(help="The signal's name (approval).")],
    payload: Annotated[str, typer.Option(
        "--payload", help="The signal's payload, a JSON object.")] = "{}",
    as_json: JsonFlag = False,
) -> None:
    """Send a running saga a signal (an approval, an outside system's answer).

    A step waiting for it runs again; otherwise it is kept for the step that reads it
    later; the same payload sent again changes nothing. Exits 0 when it was delivered,
    kept or a duplicate, 1 when the saga is not found or no longer runs, 2 when the name
    or payload is not valid.
    """
    try:
        body = json.loads(payload)
    except json.JSONDecodeError as error:
        fail(2, f"--payload is not JSON ({error}); give a JSON object, e.g. "
                '\'{"approver": "ana"}\'')
    receipt = project(ctx).engine.signal(saga_id, name, body)
    if as_json:
        print_json(receipt.model_dump(mode="json"))
        return
    woke = f": woke {', '.join(receipt.woken)}" if receipt.woken else ""
    out.print(f"{saga_id} signal {name} {receipt.outcome}{woke}", markup=False,
              highlight=False)


@cli.command()
def cancel(
    ctx: typer.Context,
    saga_id: SagaId,
    reason: Annotated[str, typer.Option("--reason", help="Recorded as the saga's error.")]
    = "cancelled by request",
    wait: Annotated[bool, typer.Option("--wait", help="Wait until the undo is done.")] = False,
    timeout: Annotated[float, typer.Option("--timeout", min=0.0)] = 60.0,
    as_json: JsonFlag = False,
) -> None:
    """Cancel a running saga: no new step starts, completed steps are undone in reverse.

    Exits 0 when the saga is cancelled (or being undone), 1 when it had already ended.
    """
    engine = project(ctx).engine
    status = engine.cancel(saga_id, reason)
    if wait and not status.is_final:
        status = engine.wait(saga_id, timeout).status
    if as_json:
        print_json({"saga_id": saga_id, "status": status.value})
    else:
        out.print(Text.assemble(f"{saga_id} ", status_text(status)))
    if status not in (SagaStatus.CANCELLED, SagaStatus.COMPENSATING):
        raise typer.Exit(1)


@cli.command()
def stop(
    ctx: typer.Context,
    correlation_id: Annotated[str, typer.Argument(help="The business flow's id.")],
    as_json: JsonFlag = False,
) -> None:
    """Cancel every running saga of one correlation id (Thunderline's stop_saga)."""
    stopped = project(ctx).engine.supervisor.stop(correlation_id)
    if as_json:
        print_json({saga_id: status.value for saga_id, status in stopped.items()})
        return
    if not stopped:
        out.print(f"no running saga has correlation id {correlation_id}")
    for saga_id, status in stopped.items():
        out.print(Text.assemble(f"{saga_id} ", status_text(status)))


@cli.command()
def resume(ctx: typer.Context, saga_id: SagaId) -> None:
    """Drive one unfinished saga on now, as the recovery sweep would."""
    out.print(project(ctx).engine.supervisor.resume(saga_id))


@cli.command()
def recover(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Sagas per kind.")] = 100,
    as_json: JsonFlag = False,
) -> None:
    """Run one recovery sweep now (beat runs it every few seconds)."""
    counts = project(ctx).engine.supervisor.recover(limit)
    if as_json:
        print_json(counts)
    else:
        out.print(", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "nothing due")


@cli.command()
def stuck(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Sagas past their lease, hand-off or deadline, with what each waits on."""
    found = project(ctx).engine.supervisor.stuck()
    if as_json:
        print_json([s.model_dump(mode="json") for s in found])
        return
    if not found:
        out.print("no saga is stuck")
        return
    table = Table()
    for column in ("saga", "name", "status", "waiting on", "overdue", "deadline", "recoveries"):
        table.add_column(column)
    for s in found:
        table.add_row(s.saga_id, s.name, status_text(s.status), s.waiting_on or "",
                      f"{s.overdue_s:.1f} s", when(s.deadline_at), str(s.recoveries))
    out.print(table)


@cli.command("dead-letters")
def dead_letters(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Compensations that gave up: effects left in place, for an operator."""
    letters = project(ctx).engine.supervisor.dead_letters()
    if as_json:
        print_json([d.model_dump(mode="json") for d in letters])
        return
    if not letters:
        out.print("no dead letters")
        return
    table = Table()
    for column in ("saga", "name", "step", "attempts", "when", "error"):
        table.add_column(column)
    for d in letters:
        table.add_row(d.saga_id, d.saga, d.step, str(d.attempts), when(d.at),
                      Text(f"{d.error.type}: {d.error.message}"))
    out.print(table)


@cli.command("retry-compensation")
def retry_compensation(
    ctx: typer.Context,
    saga_id: SagaId,
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the outcome.")] = False,
    timeout: Annotated[float, typer.Option("--timeout", min=0.0)] = 60.0,
) -> None:
    """Run again the compensations a compensation_failed saga left, once the cause is fixed."""
    engine = project(ctx).engine
    retried = engine.supervisor.retry_compensation(saga_id)
    out.print(f"retrying: {', '.join(retried) or 'nothing'}")
    if wait:
        run = engine.wait(saga_id, timeout)
        out.print(Text.assemble(f"{saga_id} ", status_text(run.status)))
        if run.status is SagaStatus.COMPENSATION_FAILED:
            fail(1, "a compensation failed again; see sagaline status " + saga_id)
