"""``sagaline sagas``: the registered sagas, and one saga's steps, compensations and policies.

Registered on :data:`sagaline.cli.app.cli`. It reads definitions only, never Redis.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from sagaline.choreography.saga import ChoreographySaga
from sagaline.cli.app import JsonFlag, cli, fail, out, print_json, project
from sagaline.errors import UnknownSagaError
from sagaline.registry import (
    FallbackDescription,
    GroupDescription,
    PolicyDescription,
    SagaDescription,
    SagaRegistry,
    StepDescription,
)


@cli.command()
def sagas(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(
        metavar="[NAME]", help="Show this saga's steps; without it, list every saga.",
    )] = None,
    as_json: JsonFlag = False,
) -> None:
    """List the registered sagas, or show saga NAME: its steps, compensations and policies.

    Exits 2 when no saga is named NAME (the message lists the registered ones).
    """
    engine = project(ctx).engine
    registry = engine.registry
    choreographies = {n: c for n, c in engine.choreographies.items()
                      if isinstance(c, ChoreographySaga)}
    if name is None:
        _list(registry, choreographies, as_json)
        return
    if name in choreographies:
        _show_choreography(choreographies[name], as_json)
        return
    try:
        description = registry.describe(name)
    except UnknownSagaError as error:
        fail(2, str(error))
    if as_json:
        print_json(description.model_dump(mode="json"))
        return
    out.print(saga_header(description))
    out.print(saga_steps_table(description))


def _list(registry: SagaRegistry, choreographies: Mapping[str, ChoreographySaga],
          as_json: bool) -> None:
    described = [registry.describe(n) for n in registry.names()]
    listed = [{"name": d.name, "kind": "orchestration", "description": d.description,
               "inputs": d.inputs, "steps": [s.name for s in d.steps]} for d in described]
    for choreography in choreographies.values():
        about = choreography.describe()
        listed.append({"name": about["name"], "kind": "choreography",
                       "description": about["description"], "inputs": about["inputs"],
                       "steps": [r["name"] for r in about["reactions"]]})
    listed.sort(key=lambda entry: str(entry["name"]))
    if as_json:
        print_json(listed)
        return
    if not listed:
        out.print("no sagas registered")
        return
    table = Table()
    for column in ("saga", "steps", "description"):
        table.add_column(column, justify="right" if column == "steps" else "left")
    for entry in listed:
        kind = " (choreography)" if entry["kind"] == "choreography" else ""
        table.add_row(Text(str(entry["name"])), str(len(entry["steps"])),
                      Text(f"{entry['description']}{kind}"))
    out.print(table)


def _show_choreography(choreography: ChoreographySaga, as_json: bool) -> None:
    about = choreography.describe()
    if as_json:
        print_json(about)
        return
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    for key, value in (("saga", f"{about['name']} (choreography: no coordinator)"),
                       ("description", about["description"]),
                       ("inputs", f"{about['inputs']} ({', '.join(about['input_fields'])})"),
                       ("starts with", about["starts_with"]),
                       ("completes on", about["completes_on"])):
        if value:
            grid.add_row(key, Text(str(value)))
    out.print(grid)
    table = Table(title="reactions", title_justify="left", show_lines=True)
    for column in ("#", "on", "runs", "emits", "fails with", "undo on any failure"):
        table.add_column(column, justify="right" if column == "#" else "left")
    for number, reaction in enumerate(about["reactions"], start=1):
        table.add_row(str(number), Text(reaction["on"]), Text(reaction["run"]),
                      Text(reaction["emits"]), Text(reaction["fails_with"]),
                      Text(reaction["undo"] or "—"))
    out.print(table)


def saga_header(saga: SagaDescription) -> Table:
    """The saga's own facts, one a row: domains, inputs, result, defaults, deadline."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    rows: list[tuple[str, str | None]] = [
        ("saga", saga.name),
        ("description", saga.description or None),
        ("domains", _domains(saga.domains)),
        ("inputs", f"{saga.inputs} ({', '.join(saga.input_fields)})"),
        ("returns", _returns(saga.returns)),
        ("retry", f"{policy_text(saga.retry, mark_default=False)} (steps that set none)"),
        ("compensation retry",
         f"{policy_text(saga.compensation_retry, mark_default=False)} (steps that set none)"),
        ("time limit", f"{saga.step_time_limit_s:g} s (steps that set none)"),
        ("deadline", None if saga.deadline_s is None else f"{saga.deadline_s:g} s"),
    ]
    for key, value in rows:
        if value is not None:
            grid.add_row(key, Text(value))
    return grid


def saga_steps_table(saga: SagaDescription) -> Table:
    """The steps in order: tasks, arguments, retry policies, time limit and queue.

    A parallel group shows as a row of its own, its branches under it (``2.1``, ``2.2``),
    each marked ``∥ in group NAME``: they run at once, not one after the other.
    """
    table = Table(title="steps", title_justify="left", show_lines=True)
    for column in ("#", "step", "action", "compensation", "retry", "time limit", "queue"):
        table.add_column(column, justify="right" if column == "#" else "left")
    groups = {group.name: group for group in saga.groups}
    number, branch = 0, 0
    for step in saga.steps:
        group = groups.pop(step.group, None) if step.group else None
        if group is not None:
            number, branch = number + 1, 0
            _add_group(table, str(number), group)
        if step.group:
            branch += 1
            _add_step(table, f"{number}.{branch}", step)
        else:
            number += 1
            _add_step(table, str(number), step)
    return table


def _add_group(table: Table, number: str, group: GroupDescription) -> None:
    bound = (f"at most {group.max_concurrency} at a time" if group.max_concurrency
             else "all at once")
    table.add_row(number, Text(f"{group.name} (parallel group)"),
                  Text(f"runs at once: {', '.join(group.branches)}\n{bound}"),
                  Text("each branch its own (below)"), "", "", "")


def _add_step(table: Table, number: str, step: StepDescription) -> None:
    name = step.name if step.kind == "step" else f"{step.name} ({step.kind})"
    if step.group:
        name = f"∥ {name}\nin group {step.group}"
    extra = "".join(f"\n{k}: {json.dumps(v)}" for k, v in step.extra.items()
                    if v != [] and v != {} and v is not False)  # defaults: nothing to say
    fallback = step.fallback
    table.add_row(
        number,
        Text(name + extra),
        Text("\n".join(filter(None, [
            _operation(step.action, step.args),
            _operation(f"fallback: {fallback.action}", fallback.args) if fallback else None,
        ]))),
        Text("\n".join(filter(None, [
            _operation(step.compensation, step.compensation_args) if step.compensation
            else "—",
            _fallback_undo(fallback) if fallback else None,
        ]))),
        Text("\n".join(filter(None, [
            policy_text(step.retry) if step.retry else None,
            f"undo: {policy_text(step.compensation_retry)}" if step.compensation_retry
            else None,
            f"fallback: {policy_text(fallback.retry)}" if fallback else None,
        ]))),
        "" if step.time_limit_s is None else f"{step.time_limit_s:g} s",
        Text("\n".join(filter(None, [
            step.queue or "(default)",
            f"undo: {step.compensation_queue}" if step.compensation_queue else None,
        ]))),
    )
    for index, member in enumerate(step.steps, start=1):
        _add_step(table, f"{number}.{index}", member)


def _fallback_undo(fallback: FallbackDescription) -> str:
    if fallback.compensation is None:
        return "fallback: nothing undoes it"
    return _operation(f"fallback: {fallback.compensation}", fallback.compensation_args)


def _operation(task: str | None, args: dict[str, str]) -> str:
    lines = [task or "—"] + [f"  {arg} ← {ref}" for arg, ref in args.items()]
    return "\n".join(lines)


def _domains(domains: dict[str, Any] | None) -> str | None:
    if domains is None:
        return None
    reason = domains.get("reason")
    return f"{domains['direction']} — {reason}" if reason else str(domains["direction"])


def _returns(returns: dict[str, str] | str | None) -> str:
    if returns is None:
        return "the last step's result"
    if isinstance(returns, str):
        return returns
    return ", ".join(f"{key} ← {ref}" for key, ref in returns.items())


def policy_text(policy: PolicyDescription, *, mark_default: bool = True) -> str:
    """A retry policy in a few words: ``3 attempts (1 s x2, max 300 s)``, or ``no retry``.

    With ``mark_default``, a policy the step takes from its saga says so.
    """
    if policy.attempts == 1:
        text = "no retry"
    else:
        text = (f"{policy.attempts} attempts ({policy.initial_s:g} s x{policy.multiplier:g}, "
                f"max {policy.maximum_s:g} s)")
    if policy.non_retryable:
        text += "; never on " + ", ".join(n.rsplit(".", 1)[-1] for n in policy.non_retryable)
    if mark_default and policy.source == "saga":
        text += " (saga default)"
    return text
