"""The demo: run an app's example sagas on a real worker, printing each transition live.

It is generic: it knows sagas and their transition logs, not what the sagas do. An app
offers a demo with a ``demo`` submodule (``config.demo`` for ``--app config``) holding
``SCENARIOS``, a list of :class:`DemoScenario`, and optionally ``DATA``, a :class:`DemoData`
(the demo puts the example data back as it found it; ``sagaline demo --reset`` reseeds it).
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from rich.console import Console

from sagaline.engine import Sagaline
from sagaline.outcome import SagaRun
from sagaline.status import SagaStatus, StepStatus
from sagaline.store.embedded import EmbeddedRedis

#: How often the transition log is read while a saga runs, in seconds.
POLL_S = 0.05
#: How often a running saga's progress reports are read, in seconds.
PROGRESS_POLL_S = 0.5
#: How long one scenario may take before the demo gives up on it, in seconds.
SCENARIO_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class DemoScenario:
    """One saga run the demo makes, and how it should end."""

    title: str
    """What the scenario shows, in a few words."""
    saga: str
    """The registered name of the saga to start."""
    inputs: Mapping[str, Any] | Callable[[], Mapping[str, Any]]
    """The saga's inputs, or a function making them afresh for each run (e.g. a new
    email address, so the demo can run again on the same data)."""
    expect: SagaStatus
    """The final status the scenario should end in."""
    compensations: tuple[str, ...] | None = None
    """The compensations expected to run, in order; ``None`` to not check them."""
    prepare: Callable[[], None] | None = None
    """Called before the saga starts, to put the data it needs in place (idempotent)."""
    show: Callable[[SagaRun], Sequence[str]] | None = None
    """Lines to print once the run is final (what it left behind: a mail, rows)."""

    def make_inputs(self) -> Mapping[str, Any]:
        """The inputs of this run."""
        return self.inputs() if callable(self.inputs) else self.inputs


@dataclass(frozen=True)
class DemoData:
    """How an app's demo keeps its example data; each function returns lines to print."""

    keep: Callable[[], Callable[[], Sequence[str]]]
    """Notes the data before the scenarios; returns what puts it back as it was."""
    reset: Callable[[], Sequence[str]]
    """Puts the data back as first seeded."""


def load_demo(module: str) -> tuple[list[DemoScenario], DemoData | None] | None:
    """The ``SCENARIOS`` and ``DATA`` of ``<module>.demo``; ``None`` if the app has no demo.

    Raises:
        TypeError: ``SCENARIOS`` is not a list of scenarios, or ``DATA`` not a DemoData.
    """
    name = f"{module}.demo"
    try:
        demo = importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name == name:
            return None
        raise
    scenarios = getattr(demo, "SCENARIOS", None)
    if not isinstance(scenarios, list | tuple) or not all(
        isinstance(s, DemoScenario) for s in scenarios
    ):
        raise TypeError(f"{name}.SCENARIOS must be a list of sagaline.demo.DemoScenario")
    data = getattr(demo, "DATA", None)
    if data is not None and not isinstance(data, DemoData):
        raise TypeError(f"{name}.DATA must be a sagaline.cli.demo.DemoData")
    return list(scenarios), data


def start_embedded(settings: object) -> EmbeddedRedis | None:
    """Start the app's embedded Redis, quietly; the server if this call started it.

    ``settings`` is the app's settings object (``data_dir``, ``redis_url``); an app without
    one, or with a Redis URL, has none. The demo stops a server it started when it ends.
    """
    if settings is None or getattr(settings, "redis_url", None) is not None:
        return None
    data_dir = getattr(settings, "data_dir", None)
    if not isinstance(data_dir, Path):
        return None
    embedded = EmbeddedRedis.for_app(data_dir)
    return embedded if embedded.ensure_running(announce=False) else None


class DemoWorker:
    """A real prefork Celery worker process for the demo, started and stopped by it."""

    def __init__(self, module: str, app: Any, *, concurrency: int = 2) -> None:
        """Prepare a worker for the app in ``module`` (``celery -A module worker``)."""
        self.module = module
        self.app = app
        self.concurrency = concurrency
        self.node = f"demo-{os.getpid()}"
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = Path(tempfile.gettempdir()) / f"sagaline-{self.node}.log"

    def command(self) -> list[str]:
        """The worker's command line."""
        return [
            sys.executable, "-m", "celery", "-A", self.module, "worker", "--pool=prefork",
            "-c", str(self.concurrency), "-l", "warning", "--without-mingle",
            "--without-gossip", "-n", f"{self.node}@%h", "-Q", ",".join(app_queues(self.app)),
        ]

    def start(self, timeout: float = 60.0) -> None:
        """Start the worker and wait until it answers a ping.

        Raises:
            RuntimeError: It exited or did not answer; the message points at its log.
        """
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                self.command(), cwd=Path.cwd(), stdout=log, stderr=subprocess.STDOUT
            )
        try:
            self._await(self.process, timeout)
        except BaseException:
            self.stop(keep_log=True)
            raise

    def _await(self, process: subprocess.Popen[bytes], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"the demo worker exited; see {self.log_path}")
            if self._answers():
                return
        raise RuntimeError(f"the demo worker did not answer within {timeout:g} s; "
                           f"see {self.log_path}")

    def _answers(self) -> bool:
        replies = self.app.control.ping(timeout=0.5) or []
        return any(host.startswith(f"{self.node}@") for reply in replies for host in reply)

    def stop(self, *, keep_log: bool = False) -> None:
        """Stop the worker warmly (or kill it after 30 s); remove its log unless kept."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if not keep_log:
            self.log_path.unlink(missing_ok=True)

    def __enter__(self) -> DemoWorker:
        """Start the worker."""
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Stop the worker; keep its log when something went wrong."""
        self.stop(keep_log=kind is not None)


def app_queues(app: Any) -> list[str]:
    """Every queue the app's messages go to: its default and those its routes name.

    The demo's one worker consumes them all (a deployment runs a worker per queue).
    """
    queues = [str(app.conf.task_default_queue or "celery")]
    routes = app.conf.task_routes or {}
    for route in routes.values() if isinstance(routes, Mapping) else ():
        queue = route.get("queue") if isinstance(route, Mapping) else None
        if queue and queue not in queues:
            queues.append(str(queue))
    return queues


def progress_lines(run: SagaRun, shown: dict[str, float]) -> list[str]:
    """A line for each running step whose progress moved since it was last shown."""
    lines = []
    for step in run.steps:
        progress = step.progress
        if progress is None or step.status is not StepStatus.RUNNING:
            continue
        if shown.get(step.name) == progress.done:
            continue
        shown[step.name] = progress.done
        lines.append(f"  ⋯ {step.name} {progress.describe(share=False)}")
    return lines


def compensation_names(engine: Sagaline, saga: str) -> dict[str, str]:
    """Per step of ``saga``, its compensation's short name (``release_inventory``).

    Under ``"{step}:fallback"``, that of the step's fallback's compensation.
    """
    if saga not in engine.registry:
        return {}
    names = {}
    for step in engine.registry.get(saga).steps:
        if step.compensation is not None:
            names[step.name] = step.compensation.short_name
        if step.fallback is not None and step.fallback.compensation is not None:
            names[f"{step.name}:fallback"] = step.fallback.compensation.short_name
    return names


def _error_text(entry: Mapping[str, Any]) -> str:
    error = entry.get("error")
    if isinstance(error, Mapping):
        return str(error.get("message") or error.get("type") or "")
    return "" if error is None else str(error)


def _saga_line(what: str, entry: Mapping[str, Any]) -> tuple[str, str] | None:
    if what == "started":
        return f"  ▶ {entry.get('saga', 'saga')} started", "bold"
    if what == "failed" and entry.get("step"):
        return f"  ⚠ {entry['step']} failed for good: undoing completed steps, last first", \
            "yellow"
    if what == "failed":
        return f"  ✗ saga failed: {_error_text(entry)}", "red"
    if what == "compensation_failed":
        left = ", ".join(entry.get("undone") or [])
        return f"  ● compensation_failed (left in place: {left})", "bold red"
    style = "bold green" if what == "completed" else "bold yellow"
    return f"  ● {what}", style


def describe(entry: Mapping[str, Any], undo: Mapping[str, str]) -> tuple[str, str] | None:
    """One transition as a line to print and its style; ``None`` for those not shown.

    Args:
        entry: The transition as logged (``event``, ``step``, ``attempt``, ``error``...).
        undo: Per step, its compensation's name, to name compensations by their own name.
    """
    role, _, what = str(entry.get("event", "")).partition(".")
    if role == "saga":
        return _saga_line(what, entry)
    if role == "group":
        return f"  ✓ group {entry.get('group', '')} completed: every branch is done", "green"
    step = str(entry.get("step") or "")
    attempt = entry.get("attempt")
    if role == "compensation" and what == "skipped":
        return f"  · {step}: nothing to undo ({entry.get('reason', 'no compensation')})", "dim"
    if role == "fallback" and what == "due":
        return f"  ⤷ {step} gave up: trying its fallback", "yellow"
    if role == "compensation":
        key = f"{step}:fallback" if entry.get("via") == "fallback" else step
        name, mark = f"{undo.get(key, step)} (compensation)", "↺"
    elif role == "fallback":
        name, mark = f"{step} (fallback)", "✓"
    else:
        name, mark = step, "✓"
    if what == "completed":
        suffix = f" (attempt {attempt})" if role == "action" or (attempt or 1) > 1 else ""
        return f"  {mark} {name} completed{suffix}", "green"
    if what == "retrying":
        delay = float(entry.get("retry_in_s") or 0)
        return (f"  ↻ {name} failed (attempt {attempt}), retrying in {delay:.1f} s: "
                f"{_error_text(entry)}"), "yellow"
    if what == "failed":
        return f"  ✗ {name} failed: {_error_text(entry)}", "red"
    if what == "duplicate":
        return f"  · {name}: duplicate delivery ignored ({entry.get('reason', '')})", "dim"
    return None


def say(console: Console, text: str, style: str | None = None) -> None:
    """Print a line as it is: no markup, no highlighting, no wrapping."""
    console.print(text, style=style, markup=False, highlight=False, soft_wrap=True)


def follow(engine: Sagaline, saga_id: str, console: Console, timeout: float) -> bool:
    """Print the run's transitions as they are logged until it is final; whether it was."""
    store = engine.store
    undo: dict[str, str] | None = None
    seen = 0
    shown: dict[str, float] = {}
    next_progress = 0.0
    deadline = time.monotonic() + timeout
    while True:
        status = store.status(saga_id)  # read before the log: a final status's entry is in
        for entry in store.transitions(saga_id, seen):
            seen += 1
            if undo is None:
                undo = compensation_names(engine, str(entry.get("saga", "")))
            line = describe(entry, undo)
            if line is not None:
                say(console, *line)
        if time.monotonic() >= next_progress and status is not None and not status.is_final:
            next_progress = time.monotonic() + PROGRESS_POLL_S
            for text in progress_lines(engine.get(saga_id), shown):
                say(console, text, "dim")
        if status is not None and status.is_final:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_S)


def judge(run: SagaRun, scenario: DemoScenario, console: Console) -> bool:
    """Print the run's outcome; whether it ended as the scenario expected."""
    ok = run.status is scenario.expect and (
        scenario.compensations is None or tuple(run.compensations) == scenario.compensations
    )
    if run.result is not None:
        say(console, f"    result: {json.dumps(run.result)}")
    if run.error is not None:
        say(console, f"    error: {run.error.type}: {run.error.message}")
    if run.compensations:
        say(console, f"    compensations, in order: {', '.join(run.compensations)}")
    if ok:
        say(console, f"    → {run.status.value}, as expected", "bold green")
        return True
    wanted = scenario.expect.value
    if scenario.compensations is not None:
        wanted += f" with compensations {', '.join(scenario.compensations) or 'none'}"
    say(console, f"    → {run.status.value}, NOT as expected ({wanted})", "bold red")
    return False


def run_scenario(
    engine: Sagaline, scenario: DemoScenario, console: Console,
    timeout: float = SCENARIO_TIMEOUT_S,
) -> bool:
    """Run one scenario, printing it live; whether it ended as expected."""
    if scenario.prepare is not None:
        scenario.prepare()
    handle = engine.start(scenario.saga, scenario.make_inputs())
    say(console, f"  saga {handle.saga_id}", "dim")
    if not follow(engine, handle.saga_id, console, timeout):
        say(console, f"    → still {handle.get().status.value} after {timeout:g} s", "bold red")
        return False
    run = handle.get()
    for line in scenario.show(run) if scenario.show is not None else ():
        say(console, f"    {line}")
    return judge(run, scenario, console)


def run_scenarios(
    engine: Sagaline, scenarios: Sequence[DemoScenario], console: Console
) -> bool:
    """Run the scenarios one after the other; whether every one ended as expected."""
    results = []
    for number, scenario in enumerate(scenarios, start=1):
        console.print()
        say(console, f"[{number}/{len(scenarios)}] {scenario.title}", "bold cyan")
        results.append(run_scenario(engine, scenario, console))
    console.print()
    style = "bold green" if all(results) else "bold red"
    say(console, f"{sum(results)} of {len(results)} scenarios ended as expected.", style)
    return all(results)


def run_demo(
    module: str, app: Any, engine: Sagaline, scenarios: Sequence[DemoScenario],
    console: Console, data: DemoData | None = None,
) -> bool:
    """Start a worker for the app in ``module``, run the scenarios, stop the worker.

    With ``data``, the example data is put back as the demo found it, whatever happened.
    """
    put_back = data.keep() if data is not None else None
    worker = DemoWorker(module, app)
    say(console, f"Starting a worker (celery -A {module} worker, "
                 f"{worker.concurrency} processes)...")
    try:
        with worker:
            say(console, f"Worker {worker.node} is up.")
            ok = run_scenarios(engine, scenarios, console)
            say(console, "Stopping the worker...")
    finally:
        for line in put_back() if put_back is not None else ():
            say(console, line)
    return ok
