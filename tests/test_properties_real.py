"""Property tests on a real prefork worker: generated sagas, run by Celery, checked by the model.

The broker-free properties (``tests/runtime/test_properties.py``) run thousands of sagas;
these run a few dozen through the real transport (chains, errbacks, Celery retries, the
worker's own processes) and check the same invariants. The sagas are assembled at runtime
(:class:`~sagaline.SagaBuilder`), so the worker rebuilds each from its run, out of the tasks
it knows (``tests/support/steps.py``); faults are injected per saga (``inject_fault``),
failing the first attempts of an operation, or a step runs ``fail`` (fails for good at once)
or a compensation ``fail_undo`` (never succeeds).
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any
from uuid import uuid4

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sagaline import (
    FromInput,
    Parallel,
    RetryPolicy,
    Saga,
    SagaBuilder,
    Sagaline,
    SagaRun,
    SagaStatus,
    Step,
    StepStatus,
)
from sagaline.status import Role
from tests.runtime.model import (
    FINAL_EVENTS,
    FLAKY,
    REFUSE,
    GroupSpec,
    SagaPlan,
    SagaSpec,
    StepSpec,
    fate,
    predict,
    saga_specs,
)
from tests.support.sagas import Tagged
from tests.support.steps import calls_key, fail, fail_undo, succeed, undo
from tests.test_composition import most_at_once

pytestmark = pytest.mark.usefixtures("worker")

EXAMPLES = 40
#: Injected faults of one operation: mostly none.
FAULTS = st.sampled_from([0, 0, 0, 0, 1, 1, 2, 3])
TALLY: Counter[str] = Counter()
TAG = {"tag": FromInput("tag")}
#: A ``fail_undo`` compensation fails every attempt; the plan says so for this many.
ALWAYS = 9


@dataclass(frozen=True)
class RealScenario:
    """A shape, and per operation how it fails: injected faults, or a task that fails."""

    spec: SagaSpec
    faults: dict[tuple[str, str], int]
    """Per ``(step, "action" | "undo")``: how many first attempts an injected fault fails."""
    refuses: frozenset[str]
    """Steps whose action is ``fail``: it fails for good at once."""
    undo_fails: frozenset[str]
    """Steps whose compensation is ``fail_undo``: it never succeeds."""

    def plan(self) -> SagaPlan:
        """The scenario as the model's fault plan."""
        plan: SagaPlan = {}
        for step in self.spec.steps():
            name = step.name
            plan[(name, "action")] = ((REFUSE,) if name in self.refuses
                                      else (FLAKY,) * self.faults.get((name, "action"), 0))
            plan[(name, "undo")] = ((FLAKY,) * ALWAYS if name in self.undo_fails
                                    else (FLAKY,) * self.faults.get((name, "undo"), 0))
        return plan


@st.composite
def real_scenarios(draw: st.DrawFn) -> RealScenario:
    """Steps, bounded groups and a pivot (no fallbacks or nested sagas: an assembled saga
    cannot record them), and how each operation fails.
    """
    spec = replace(draw(saga_specs(fallbacks=False, max_steps=5)), returns=None)
    faults: dict[tuple[str, str], int] = {}
    refuses, undo_fails = set(), set()
    for step in spec.steps():
        if draw(st.integers(0, 9)) == 9:
            refuses.add(step.name)
        else:
            faults[(step.name, "action")] = draw(FAULTS)
        if step.undo and draw(st.integers(0, 5)) == 5:
            undo_fails.add(step.name)
        elif step.undo:
            faults[(step.name, "undo")] = draw(FAULTS)
    return RealScenario(spec, faults, frozenset(refuses), frozenset(undo_fails))


def policy(attempts: int) -> RetryPolicy:
    return RetryPolicy(attempts=attempts, initial=timedelta(0), jitter=0)


def assemble(scenario: RealScenario, name: str) -> Saga:
    """The scenario's saga, assembled at runtime from the tasks the worker knows."""

    def step(spec: StepSpec) -> Step:
        compensation = None
        if spec.undo:
            compensation = fail_undo if spec.name in scenario.undo_fails else undo
        return Step(spec.name, fail if spec.name in scenario.refuses else succeed,
                    compensation=compensation, args=TAG, retry=policy(spec.attempts),
                    compensation_retry=policy(spec.undo_attempts), pivot=spec.pivot)

    builder = SagaBuilder(name, inputs=Tagged, retry=policy(2))
    for element in scenario.spec.elements:
        if isinstance(element, GroupSpec):
            builder.add(Parallel(element.name, [step(b) for b in element.branches],
                                 max_concurrency=element.limit))
        else:
            builder.add(step(element))
    return builder.build()


def settled(engine: Sagaline, run: SagaRun, timeout: float = 30.0) -> SagaRun:
    """The final run once no action of it still runs.

    A branch with nothing to undo may still run when its sibling's failure concludes the
    saga (nothing waits for it); it ends on its own, and only then can its note be matched
    with its record.
    """
    deadline = time.monotonic() + timeout
    while any(s.status is StepStatus.RUNNING for s in run.steps):
        assert time.monotonic() < deadline, f"{run.saga_id}: an action still runs"
        time.sleep(0.05)
        run = engine.get(run.saga_id)
    return run


def check(scenario: RealScenario, run: SagaRun, notes: list[str]) -> None:
    """The model's invariants, read from the run and from the operations' own notes."""
    spec, plan = scenario.spec, scenario.plan()
    finals = [t.event for t in run.log if t.event in FINAL_EVENTS]
    assert finals == [f"saga.{run.status.value}"], f"final states {finals}, {run.status}"
    prediction = predict(spec, {"": plan}, 0)
    done = {s.name for s in spec.steps() if run.step(s.name).status is StepStatus.COMPLETED}
    for step in spec.steps():
        ran = notes.count(f"{step.name}:action")
        assert ran <= 1, f"{step.name}: its action ran {ran} times"
        if step.name not in scenario.refuses:
            assert (ran == 1) == (step.name in done), f"{step.name}: noted {ran}, recorded {done}"
        end = fate(plan[(step.name, "action")], step.attempts)
        assert run.step(step.name).attempts <= end.attempts, f"{step.name}: too many attempts"
    if prediction.kind == "completed":
        assert run.status is SagaStatus.COMPLETED, f"ended {run.status.value}"
        assert done == {s.name for s in spec.steps()}
        last = spec.elements[-1]

        def declared(step: StepSpec) -> dict[str, Any]:
            return {"step": step.name,
                    "attempt": fate(plan[(step.name, "action")], step.attempts).attempts}

        def recorded(result: dict[str, Any]) -> dict[str, Any]:
            return {k: v for k, v in result.items() if k != "pid"}

        if isinstance(last, GroupSpec):
            expected: Any = {b.name: declared(b) for b in last.branches}
            result: Any = {k: recorded(v) for k, v in run.result.items()}
        else:
            expected, result = declared(last), recorded(run.result)
        assert result == expected, f"result {run.result}, declared {expected}"
        assert not [n for n in notes if ":compensation" in n], "compensations ran"
        return
    failing = prediction.failing
    assert failing is not None
    before = {s.name for i in range(failing) for s in spec.members(i)}
    after = {s.name for i in range(failing + 1, len(spec.elements)) for s in spec.members(i)}
    assert before <= done, f"{sorted(before - done)} did not complete before the failure"
    assert not after & {n.split(":")[0] for n in notes}, "a step after the failure ran"
    assert run.failed_step in [s.name for s in spec.members(failing)], run.failed_step
    if prediction.kind == "needs_attention":
        assert run.status is SagaStatus.NEEDS_ATTENTION, f"ended {run.status.value}"
        assert not [n for n in notes if ":compensation" in n], "compensations ran"
        return
    gave_up = set()
    for step in spec.steps():
        undos = [n for n in notes if n.startswith(f"{step.name}:compensation")]
        if step.name not in done or not step.undo:
            assert not undos, f"{step.name} compensated, with nothing to undo"
            continue
        end = fate(plan[(step.name, "undo")], step.undo_attempts)
        if step.name in scenario.undo_fails:
            assert len(undos) == step.undo_attempts, f"{step.name}: {undos}"
        else:
            assert len(undos) == end.ok, f"{step.name}: undone {len(undos)} times"
        if not end.ok:
            gave_up.add(step.name)
    assert set(run.undone) == gave_up, f"undone {run.undone}, gave up {gave_up}"
    status = SagaStatus.COMPENSATION_FAILED if gave_up else SagaStatus.COMPENSATED
    assert run.status is status, f"ended {run.status.value}, not {status.value}"
    stages = [spec.element_of(n.split(":")[0]) for n in notes if ":compensation" in n]
    assert stages == sorted(stages, reverse=True), f"compensations by element: {stages}"


def check_bounds(spec: SagaSpec, run: SagaRun) -> None:
    """No group ran more branches at once than its bound."""
    for element in spec.elements:
        if isinstance(element, GroupSpec) and element.limit:
            spans = []
            for branch in element.branches:
                record = run.step(branch.name)
                if record.started_at and record.ended_at:
                    spans.append((record.started_at.timestamp(), record.ended_at.timestamp()))
            assert most_at_once(spans) <= element.limit, f"{element.name}: {spans}"


NAMES = itertools.count()


def test_generated_sagas_run_by_a_real_worker_end_as_the_model_says(
    engine: Sagaline, calls: Any,
) -> None:
    """Forty generated sagas on the session's prefork worker: one final state; completed
    with its declared result, or every completed step undone once, in reverse stages, the
    compensations that gave up named, or left for an operator past its pivot; no action run
    twice; no group past its bound.
    """
    client = engine.store.client

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                     HealthCheck.function_scoped_fixture])
    @given(scenario=real_scenarios())
    def prop(scenario: RealScenario) -> None:
        name = f"t_prop_{next(NAMES)}_{uuid4().hex[:8]}"
        tag = f"{calls.tag}-{name}"
        for (step, op), times in scenario.faults.items():
            if times:
                role = Role.ACTION if op == "action" else Role.COMPENSATION
                engine.store.inject_fault(name, step, role, times=times)
        run = settled(engine, engine.start(assemble(scenario, name), {"tag": tag}).wait(60))
        notes = [str(n) for n in client.lrange(calls_key(tag), 0, -1)]
        check(scenario, run, notes)
        check_bounds(scenario.spec, run)
        TALLY[run.status.value] += 1

    prop()
    assert sum(TALLY.values()) >= EXAMPLES, TALLY
    print(f"\nreal-worker properties: {sum(TALLY.values())} generated sagas, ended {dict(TALLY)}")
