"""Fan-out decided at run time, progress reports, and long actions told to stop, in-process.

A step's result adds a parallel group whose branches are known only then (one per
proposal); the group is bounded, recorded with the run and undone like a declared one. An
action reports its progress into the saga's record and to telemetry. An action still
running when its saga turns to rolling back is told to stop (``ctx.cancelled()``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from sagaline import Const, Parallel, Saga, Step, StepContext, add_steps, saga_task, telemetry
from sagaline.status import Role, SagaStatus, StepStatus

from .support import InProcess, Nothing, refuse, succeed, undo


@saga_task("rt.trial")
def trial(ctx: StepContext, index: int, epochs: int) -> dict[str, Any]:
    """Report each epoch's progress, stopping when told to."""
    for epoch in range(1, epochs + 1):
        ctx.progress(epoch, epochs, accuracy=0.5 + epoch / 100)
    return {"index": index, "stopped": ctx.cancelled()}


@saga_task("rt.propose")
def propose(ctx: StepContext, trials: int, limit: int, failing: int) -> dict[str, Any]:
    """Add one training branch per proposal, at most ``limit`` at once; branch ``failing``
    (if any) refuses.
    """
    branches = [Step(f"train_{i}", refuse if i == failing else trial, compensation=undo,
                     args={} if i == failing else {"index": Const(i), "epochs": Const(3)})
                for i in range(trials)]
    return add_steps({"proposed": trials}, Parallel("train", branches, max_concurrency=limit))


def search(name: str, trials: int = 3, limit: int = 2, failing: int = -1) -> Saga:
    return Saga(name, inputs=Nothing, steps=[
        Step("prepare", succeed, compensation=undo),
        Step("propose", propose, adds=[trial, refuse, undo],
             args={"trials": Const(trials), "limit": Const(limit), "failing": Const(failing)}),
        Step("collect", succeed, compensation=undo),
    ])


@pytest.fixture
def reports() -> Iterator[list[tuple[Mapping[str, float], Mapping[str, Any]]]]:
    """The ``step progress`` telemetry events this process emits during the test."""
    seen: list[tuple[Mapping[str, float], Mapping[str, Any]]] = []
    telemetry.attach("test-progress", [telemetry.STEP_PROGRESS],
                     lambda event, measurements, metadata: seen.append((measurements, metadata)))
    yield seen
    telemetry.detach("test-progress")


def test_a_group_added_at_run_time_runs_bounded_and_the_saga_goes_on_after_it(
        rt: InProcess) -> None:
    saga_id = rt.start(search("rt_fan_out", trials=3, limit=2))
    rt.deliver("prepare:action")
    rt.deliver("propose:action")
    assert sorted(rt.transport.queued()) == ["train_0:action", "train_1:action"]  # bounded
    rt.run()
    run = rt.load(saga_id)
    assert run.status is SagaStatus.COMPLETED
    assert [s.name for s in run.steps] == ["prepare", "propose", "train_0", "train_1",
                                          "train_2", "collect"]
    assert all(s.status is StepStatus.COMPLETED for s in run.steps)
    # A worker that knows only the declared saga still reads the group from the record.
    rt.driver._assembled.clear()
    assert rt.driver.saga_of(saga_id).group_of("train_2") is not None


def test_a_failed_branch_of_a_group_added_at_run_time_undoes_every_completed_branch(
        rt: InProcess) -> None:
    saga_id = rt.start(search("rt_fan_out_fails", trials=3, limit=3, failing=2))
    rt.run()
    run = rt.load(saga_id)
    assert run.status is SagaStatus.COMPENSATED
    assert sorted(rt.undone(saga_id)) == ["prepare", "train_0", "train_1"]
    assert run.step("train_2").compensation is not None
    assert run.step("train_2").compensation.status is not StepStatus.COMPLETED  # type: ignore[union-attr]


def test_progress_is_recorded_for_the_running_step_and_told_to_telemetry(
        rt: InProcess, reports: list[tuple[Mapping[str, float], Mapping[str, Any]]]) -> None:
    saga_id = rt.start(search("rt_progress", trials=2, limit=1))
    rt.run()
    progress = rt.load(saga_id).step("train_0").progress
    assert progress is not None
    assert (progress.done, progress.total, progress.fraction) == (3, 3, 1.0)
    assert progress.metrics == {"accuracy": 0.53} and progress.attempt == 1
    assert [m["done"] for m, _ in reports] == [1, 2, 3, 1, 2, 3]
    assert [md["step"] for _, md in reports] == ["train_0"] * 3 + ["train_1"] * 3
    assert reports[0][1]["metrics"] == {"accuracy": 0.51}


@pytest.mark.parametrize(("done", "total", "problem"), [
    (-1, 3, "done >= 0"), (1, 0, "total > 0"), (float("nan"), 3, "finite"),
    (True, 3, "finite number"), (1, None, None),
])
def test_progress_refuses_what_is_not_a_count(done: Any, total: Any, problem: str | None
                                              ) -> None:
    got: list[dict[str, Any]] = []
    ctx = StepContext(saga_id="s", saga_name="n", step="x", role=Role.ACTION, attempt=1,
                      correlation_id="c", progress_sink=got.append)
    if problem is None:
        ctx.progress(done, total)
        assert got == [{"done": 1, "total": None, "metrics": {}, "attempt": 1}]
        return
    with pytest.raises(ValueError, match=problem):
        ctx.progress(done, total)
    with pytest.raises(ValueError, match="JSON"):
        ctx.progress(1, 2, model=object())


def test_an_action_running_when_its_saga_turns_to_rolling_back_is_told_to_stop(
        rt: InProcess) -> None:
    """Branch 0 is running when branch 2 fails: from then on ``ctx.cancelled()`` is true
    for it (its result would be undone anyway), and what it completed is undone.
    """
    saga_id = rt.start(search("rt_stop_branch", trials=3, limit=3, failing=2))
    rt.deliver("prepare:action")
    rt.deliver("propose:action")
    rt.during["train_0:action"] = lambda: rt.deliver("train_2:action") and None
    told = rt.deliver("train_0:action")
    assert told.outcome == "skip"  # completed after the saga stopped: undone, chain ends
    rt.run()
    run = rt.load(saga_id)
    assert run.step("train_0").result == {"index": 0, "stopped": True}
    assert run.status is SagaStatus.COMPENSATED
    assert "train_0" in rt.undone(saga_id)



def test_the_exporters_take_progress_reports_and_stay_attached(
        caplog: pytest.LogCaptureFixture) -> None:
    """A progress event must not break an exporter (a handler that raises is detached):
    the transition logger writes it at DEBUG and stays attached; the Prometheus and
    OpenTelemetry exporters do not listen to it.
    """
    from sagaline.exporters import logs, otel, prometheus

    was = logs.HANDLER_ID in telemetry.attached(telemetry.SAGA_START)
    if not was:
        logs.install()
    try:
        with caplog.at_level("DEBUG", logger="sagaline.transitions"):
            telemetry.execute(telemetry.STEP_PROGRESS, {"done": 3, "total": 10},
                              {"saga": "s", "saga_id": "id-1", "step": "train_0",
                               "role": "action", "attempt": 1, "metrics": {}})
        assert logs.HANDLER_ID in telemetry.attached(telemetry.STEP_PROGRESS)
        assert "[saga id-1] step train_0 progress 3/10" in caplog.text
        assert telemetry.STEP_PROGRESS not in telemetry.OPERATION_EVENTS
        assert prometheus.HANDLER_ID not in telemetry.attached(telemetry.STEP_PROGRESS)
        assert otel.HANDLER_ID not in telemetry.attached(telemetry.STEP_PROGRESS)
    finally:
        if not was:
            logs.uninstall()


@saga_task("rt.announce_nothing")
def announce_nothing(ctx: StepContext) -> dict[str, Any]:
    """Emit an event whose payload holds empty lists and an empty mapping."""
    ctx.emit("crown.activation.approved", {"snapshot_id": "s", "family": "f", "policies": []})
    ctx.emit("bolt.adapters.restored", {"adapters": []})
    return {}


def test_an_emitted_payload_keeps_its_empty_lists(rt: InProcess) -> None:
    """The store's scripts used to turn an empty list into ``{}`` (Lua's JSON), so an
    emitted event no longer matched its schema; payloads now pass through untouched.
    """
    saga = Saga("rt_empty_lists", inputs=Nothing, steps=[Step("announce", announce_nothing)])
    saga_id = rt.start(saga)
    rt.run()
    payloads = {e.name: e.payload for e in rt.outbox.events_of(saga_id)
                if not e.name.startswith("saga.")}
    assert payloads == {"crown.activation.approved": {"snapshot_id": "s", "family": "f",
                                                      "policies": []},
                        "bolt.adapters.restored": {"adapters": []}}
