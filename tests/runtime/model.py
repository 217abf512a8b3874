"""The property tests' world: saga shapes and fault plans, planned tasks, a harness, a model.

- **Shapes** (:class:`SagaSpec`): steps in sequence, parallel groups with a bound,
  fallbacks, a pivot, steps with and without compensations, nested sagas.
- **Fault plans** (:data:`Plan`): per operation, what each attempt does: succeed, fail
  retryably, fail for good, or lose its worker before or after its effect.
- **Planned tasks** (``rt_prop.*``): read the plan, and note every call and every effect
  they apply in the :data:`LEDGER`; a participant keyed by its idempotency key, so a worker
  lost after its effect does not apply it twice when the message comes again.
- **The harness** (:class:`PropertyRun`): the in-process runtime of ``support.py``, whose
  deliveries Hypothesis orders (branches interleave), with duplicates, deliveries nested in
  a running operation (real overlap), a cancel at some point, and lost workers (the message
  comes back, as Celery's ``reject_on_worker_lost`` does).
- **The model** (:func:`predict`, :class:`Model`): what the saga should have done, from the
  plan and from what the ledger saw, checked against the run as recorded.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any, Literal

from hypothesis import strategies as st
from pydantic import BaseModel

from sagaline import (
    Fallback,
    FromInput,
    FromStep,
    NonRetryableError,
    Parallel,
    Ref,
    RetryPolicy,
    Saga,
    SagaRegistry,
    SagaRun,
    Step,
    StepContext,
    SubSaga,
    saga_task,
)
from sagaline.child import child_id_of
from sagaline.runtime import Envelope, RetryIn, Runtime, Skip
from sagaline.status import FINAL_STATUSES, Role, SagaStatus

from .support import InProcess, Message, RecordingTransport, _task_id

# -- fault plans ----------------------------------------------------------------------------

OK, FLAKY, REFUSE, LOST_BEFORE, LOST_AFTER = "ok", "flaky", "refuse", "lost_before", "lost_after"
LOST = (LOST_BEFORE, LOST_AFTER)
#: Attempts after which a lost one is not run again: the runtime's ``max_recoveries`` (5)
#: re-runs after the first attempt.
LOST_LIMIT = 6
#: A step's operations, as the plan and the ledger name them.
FORWARD_OPS = ("action", "fallback")
UNDO_OPS = ("undo", "undo_fallback")

Outcomes = tuple[str, ...]
"""What attempts 1, 2, ... of one operation do; past the end, they succeed."""
SagaPlan = dict[tuple[str, str], Outcomes]
"""One saga's plan: per ``(step, op)``, its outcomes."""
Plan = dict[str, SagaPlan]
"""The plan of a saga tree: the top saga's under ``""``, a child's under its parent step."""

#: Every retry at once: the in-process transport does not wait anyway.
SAGA_RETRY = RetryPolicy(attempts=2, initial=timedelta(0), jitter=0)


def policy(attempts: int) -> RetryPolicy:
    """A retry policy of ``attempts`` attempts, without delays."""
    return RetryPolicy(attempts=attempts, initial=timedelta(0), jitter=0)


@dataclass(frozen=True)
class Fate:
    """How an operation ends under its plan, if nothing stops it first."""

    ok: bool
    """Whether it completes (else it gives up)."""
    attempts: int
    """The attempt that completes it, or gives up."""
    applied_at: int = 0
    """The attempt whose call applied the effect (earlier than ``attempts`` when a worker
    was lost after applying it and the next attempt found it done)."""


def fate(outcomes: Sequence[str], attempts: int) -> Fate:
    """How an operation with a policy of ``attempts`` attempts ends under ``outcomes``.

    A lost attempt is no failure of the operation: its message comes back and another
    attempt runs (finding a lost attempt's effect already applied, it returns its result),
    whatever the policy, unless ``LOST_LIMIT`` attempts were made (the engine's recovery
    limit): then it fails for good, its outcome unknown.
    """
    for n in itertools.count(1):
        outcome = outcomes[n - 1] if n <= len(outcomes) else OK
        if outcome == OK:
            return Fate(True, n, n)
        if outcome in LOST and n >= LOST_LIMIT:
            return Fate(False, n)
        if outcome == LOST_AFTER:
            return Fate(True, n + 1, n)
        if outcome == LOST_BEFORE:
            continue
        if outcome == REFUSE or n >= attempts:
            return Fate(False, n)
    raise AssertionError("unreachable")


# -- shapes ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FallbackSpec:
    """A step's fallback: its attempts, and whether it has a compensation of its own."""

    attempts: int
    undo: bool


@dataclass(frozen=True)
class StepSpec:
    """A step: its policy, compensation, fallback, pivot, argument; or a nested saga."""

    name: str
    attempts: int
    undo: bool
    undo_attempts: int
    fallback: FallbackSpec | None = None
    pivot: bool = False
    arg: tuple[str, ...] = ()
    """``()``: none; ``("input",)``: the input ``n``; ``("step", x)``: ``x``'s attempt."""
    child: SagaSpec | None = None
    """The saga a :class:`~sagaline.SubSaga` step runs."""


@dataclass(frozen=True)
class GroupSpec:
    """A parallel group: its branches and its bound (``None``: none)."""

    name: str
    branches: tuple[StepSpec, ...]
    limit: int | None


ElementSpec = StepSpec | GroupSpec


@dataclass(frozen=True)
class SagaSpec:
    """A saga's shape; its name is given when it is declared."""

    elements: tuple[ElementSpec, ...]
    returns: str | None = None
    """``None``: the last element's result; a step's name: ``{"first": it, "n": n}``."""

    def members(self, index: int) -> tuple[StepSpec, ...]:
        """The steps of element ``index``."""
        element = self.elements[index]
        return element.branches if isinstance(element, GroupSpec) else (element,)

    def steps(self) -> list[StepSpec]:
        """Every step, in order, a group's branches in its place."""
        return [s for i in range(len(self.elements)) for s in self.members(i)]

    def element_of(self, step: str) -> int:
        """The position of the element holding ``step``."""
        return next(i for i in range(len(self.elements))
                    if any(s.name == step for s in self.members(i)))

    def step(self, name: str) -> StepSpec:
        """The step named ``name``."""
        return next(s for s in self.steps() if s.name == name)

    def pivot(self) -> StepSpec | None:
        """The pivot step, if any."""
        return next((s for s in self.steps() if s.pivot), None)


@dataclass(frozen=True)
class CancelPlan:
    """Cancel the top saga at delivery ``at``: before it, or while its operation runs."""

    at: int
    when: Literal["between", "before", "after"]


@dataclass(frozen=True)
class Scenario:
    """One generated example: a shape, its fault plan, its input, and a cancel maybe."""

    spec: SagaSpec
    plan: Plan
    n: int = 0
    cancel: CancelPlan | None = None


# -- strategies ------------------------------------------------------------------------------

OUTCOMES = st.lists(st.sampled_from([OK, OK, FLAKY, FLAKY, REFUSE]), max_size=3).map(tuple)
OUTCOMES_WITH_LOSSES = st.lists(
    st.sampled_from([OK, FLAKY, REFUSE, LOST_BEFORE, LOST_AFTER]), max_size=3).map(tuple)
#: The action of a step with a fallback: mostly failing, or its fallback would rarely run.
GIVING_UP = st.lists(st.sampled_from([REFUSE, FLAKY, OK]), min_size=1, max_size=3).map(tuple)


@st.composite
def step_specs(draw: st.DrawFn, name: str, earlier: Sequence[str], *, after_pivot: bool,
               pivot: bool = False, fallback: bool = False) -> StepSpec:
    """A step named ``name`` that may read one of ``earlier`` (steps of earlier elements)."""
    is_pivot = pivot and draw(st.integers(0, 2)) == 2
    args: list[tuple[str, ...]] = [(), ("input",)] + [("step", s) for s in earlier]
    fallback_spec = None
    if fallback and draw(st.integers(0, 2)) == 2:
        fallback_spec = FallbackSpec(draw(st.integers(1, 2)), not is_pivot and draw(st.booleans()))
    return StepSpec(
        name=name, attempts=draw(st.integers(2 if after_pivot else 1, 3)),
        undo=not is_pivot and draw(st.booleans()), undo_attempts=draw(st.integers(1, 3)),
        fallback=fallback_spec, pivot=is_pivot, arg=draw(st.sampled_from(args)),
    )


@st.composite
def saga_specs(draw: st.DrawFn, *, groups: bool = True, children: bool = False,
               pivots: bool = True, fallbacks: bool = True, max_steps: int = 6) -> SagaSpec:
    """A saga of 1 to 4 elements and at most ``max_steps`` steps."""
    elements: list[ElementSpec] = []
    earlier: list[str] = []  # steps a later element may read (not nested sagas)
    count, pivot_seen = 0, False
    for i in range(draw(st.integers(1, 4))):
        room = max_steps - count
        if room <= 0:
            break
        kinds = ["step"] + (["group"] if groups and room >= 2 else []) + (
            ["child", "child"] if children else [])
        kind = draw(st.sampled_from(kinds))
        if kind == "group":
            size = draw(st.integers(2, min(3, room)))
            branches = tuple(draw(step_specs(f"s{count + j}", earlier, after_pivot=pivot_seen))
                             for j in range(size))
            elements.append(GroupSpec(f"g{i}", branches, draw(st.sampled_from([None, 1, 2]))))
            earlier += [b.name for b in branches]
            count += size
        elif kind == "child":
            child = draw(saga_specs(groups=False, pivots=False, fallbacks=False, max_steps=2))
            elements.append(StepSpec(f"s{count}", SAGA_RETRY.attempts, True,
                                     SAGA_RETRY.attempts, child=child))
            count += 1
        else:
            step = draw(step_specs(f"s{count}", earlier, after_pivot=pivot_seen,
                                   pivot=pivots and not pivot_seen, fallback=fallbacks))
            elements.append(step)
            pivot_seen = pivot_seen or step.pivot
            earlier.append(step.name)
            count += 1
    spec = SagaSpec(tuple(elements))
    if draw(st.integers(0, 2)) == 2:
        spec = replace(spec, returns=draw(st.sampled_from([s.name for s in spec.steps()])))
    return spec


def tree(spec: SagaSpec, key: str = "") -> Iterator[tuple[str, SagaSpec]]:
    """Every saga of a tree with its plan key: the top's ``""``, a child's its parent step."""
    yield key, spec
    for step in spec.steps():
        if step.child is not None:
            yield from tree(step.child, step.name)


@st.composite
def plans(draw: st.DrawFn, spec: SagaSpec, *, losses: bool = False) -> Plan:
    """A fault plan for every operation of the tree; at most one lost worker in all.

    No pivot loses its worker, nor the action of a step with a fallback: whether a fallback
    should run after an action whose outcome is unknown, the model does not say.
    """
    plan: Plan = {}
    lost_seen = False
    for key, saga in tree(spec):
        mine: SagaPlan = {}
        for step in saga.steps():
            if step.child is not None:
                continue
            ops = ["action"] + (["undo"] if step.undo else [])
            if step.fallback is not None:
                ops += ["fallback"] + (["undo_fallback"] if step.fallback.undo else [])
            for op in ops:
                lossy = losses and not step.pivot and not (op == "action" and step.fallback)
                outcomes = draw(OUTCOMES_WITH_LOSSES if lossy else OUTCOMES)
                if op == "action" and step.fallback is not None and draw(st.booleans()):
                    outcomes = draw(GIVING_UP)
                if lost_seen:
                    outcomes = tuple(FLAKY if o in LOST else o for o in outcomes)
                lost_seen = lost_seen or any(o in LOST for o in outcomes)
                mine[(step.name, op)] = outcomes
        plan[key] = mine
    return plan


@st.composite
def scenarios(draw: st.DrawFn, *, cancel: bool = False, losses: bool = False,
              children: bool = False, groups: bool = True) -> Scenario:
    """A shape, its plan, an input and, when ``cancel``, maybe a cancel."""
    spec = draw(saga_specs(children=children, groups=groups))
    plan = draw(plans(spec, losses=losses))
    stop = None
    if cancel and draw(st.integers(0, 5)) > 0:
        stop = CancelPlan(draw(st.integers(1, 8)),
                          draw(st.sampled_from(["between", "before", "after"])))
    return Scenario(spec, plan, draw(st.integers(0, 9)), stop)


# -- the planned tasks and their ledger ------------------------------------------------------


class Glitch(Exception):
    """A transient failure: the retry policy may retry it."""


class Refusal(NonRetryableError):
    """A failure no retry can fix."""


class WorkerLost(BaseException):
    """The worker process died during the call (no ``except Exception`` sees it)."""


class Inputs(BaseModel):
    """Every generated saga, and every nested one, takes one number."""

    n: int = 0


@dataclass
class Call:
    """One call of a planned task, as the ledger saw it."""

    start: int
    """Its place in the ledger's clock (when the delivery began to run it)."""
    saga_id: str
    step: str
    op: str
    attempt: int
    ending: Literal["returned", "replayed", "flaky", "refused", "lost"] = "returned"
    """``replayed``: it found its effect applied by a lost attempt and returned its result."""
    applied: bool = False
    """Whether it applied an effect (a compensation: undid one that was there)."""
    received: Any = None
    """A compensation's ``result`` argument."""
    undoes_fallback: bool = False


@dataclass
class Effect:
    """An effect applied, under the idempotency key of the operation that applied it."""

    result: Any
    unconfirmed: bool
    """Applied by an attempt whose worker was lost: the engine has not recorded it."""


@dataclass
class Ledger:
    """The plans the planned tasks obey, and what they did."""

    plans: dict[str, SagaPlan] = field(default_factory=dict)
    """By saga name."""
    calls: list[Call] = field(default_factory=list)
    effects: dict[str, Effect] = field(default_factory=dict)
    """By idempotency key."""
    clock: itertools.count[int] = field(default_factory=itertools.count)
    starts: list[int] = field(default_factory=list)
    """The clock readings of the deliveries whose calls are about to run (innermost last)."""

    def reset(self, plans: dict[str, SagaPlan]) -> None:
        """Start an example afresh."""
        self.plans, self.calls, self.effects, self.starts = plans, [], {}, []

    def tick(self) -> int:
        """The clock's next reading."""
        return next(self.clock)

    def outcome(self, saga: str, step: str, op: str, attempt: int) -> str:
        """What attempt ``attempt`` of the operation does."""
        outcomes = self.plans.get(saga, {}).get((step, op), ())
        return outcomes[attempt - 1] if attempt <= len(outcomes) else OK

    def calls_of(self, saga_id: str, step: str, ops: Sequence[str]) -> list[Call]:
        """The calls of one step's operations ``ops``, in order."""
        return [c for c in self.calls if c.saga_id == saga_id and c.step == step
                and c.op in ops]

    def perform(self, ctx: StepContext, op: str, *, value: Any = None,
                received: Any = None) -> dict[str, Any]:
        """Do what the plan says for this attempt, and note it."""
        start = self.starts[-1] if self.starts else self.tick()
        call = Call(start, ctx.saga_id, ctx.step, op, ctx.attempt, received=received,
                    undoes_fallback=ctx.undoes_fallback)
        self.calls.append(call)
        key = ctx.idempotency_key
        known = self.effects.get(key)
        if known is not None and known.unconfirmed:
            # A participant keyed by the idempotency key: done already, by a lost attempt.
            known.unconfirmed = False
            call.ending = "replayed"
            return dict(known.result)
        outcome = self.outcome(ctx.saga_name, ctx.step, op, ctx.attempt)
        failures = {FLAKY: ("flaky", Glitch), REFUSE: ("refused", Refusal),
                    LOST_BEFORE: ("lost", WorkerLost)}
        if outcome in failures:
            call.ending, kind = failures[outcome]  # type: ignore[assignment]
            raise kind(f"{op} of {ctx.step}, attempt {ctx.attempt}: {outcome} as planned")
        if op in UNDO_OPS:
            result: dict[str, Any] = {"undone": ctx.step, "attempt": ctx.attempt, "via": op}
            call.applied = ctx.action_key in self.effects
        else:
            result = {"step": ctx.step, "attempt": ctx.attempt, "via": op, "value": value}
            call.applied = True
        if key not in self.effects:
            self.effects[key] = Effect(result, outcome == LOST_AFTER)
        if outcome == LOST_AFTER:
            call.ending = "lost"
            raise WorkerLost(f"{op} of {ctx.step} lost its worker after its effect")
        return result


LEDGER = Ledger()


@saga_task("rt_prop.act")
def act(ctx: StepContext, value: Any = None) -> dict[str, Any]:
    """A step's action, as planned."""
    return LEDGER.perform(ctx, "action", value=value)


@saga_task("rt_prop.backup")
def backup(ctx: StepContext, value: Any = None) -> dict[str, Any]:
    """A step's fallback, as planned."""
    return LEDGER.perform(ctx, "fallback", value=value)


@saga_task("rt_prop.undo")
def undo(ctx: StepContext, result: Any = None) -> dict[str, Any]:
    """Undo a step's action, as planned."""
    return LEDGER.perform(ctx, "undo", received=result)


@saga_task("rt_prop.undo_backup")
def undo_backup(ctx: StepContext, result: Any = None) -> dict[str, Any]:
    """Undo a step's fallback, as planned."""
    return LEDGER.perform(ctx, "undo_fallback", received=result)


# -- declaring --------------------------------------------------------------------------------


def child_name(parent: str, step: str) -> str:
    """The name of the saga that step ``step`` of saga ``parent`` runs."""
    return f"{parent}_{step}"


def _args(arg: tuple[str, ...]) -> dict[str, Any]:
    if arg == ("input",):
        return {"value": FromInput("n")}
    if arg:
        return {"value": FromStep(arg[1], "attempt")}
    return {}


def _step(spec: StepSpec, saga_name: str) -> Step:
    if spec.child is not None:
        child, _ = declare(spec.child, child_name(saga_name, spec.name))
        return SubSaga(spec.name, child, inputs={"n": FromInput("n")})
    fallback = None
    if spec.fallback is not None:
        fallback = Fallback(backup, compensation=undo_backup if spec.fallback.undo else None,
                            args=_args(spec.arg), retry=policy(spec.fallback.attempts))
    return Step(spec.name, act, compensation=undo if spec.undo else None, args=_args(spec.arg),
                retry=policy(spec.attempts), compensation_retry=policy(spec.undo_attempts),
                fallback=fallback, pivot=spec.pivot)


def declare(spec: SagaSpec, name: str) -> tuple[Saga, list[Saga]]:
    """The saga of ``spec`` named ``name``, and every saga nested in it."""
    elements: list[Step | Parallel] = []
    for element in spec.elements:
        if isinstance(element, GroupSpec):
            elements.append(Parallel(element.name, [_step(b, name) for b in element.branches],
                                     max_concurrency=element.limit))
        else:
            elements.append(_step(element, name))
    returns: dict[str, Ref] | None = None
    if spec.returns is not None:
        returns = {"first": FromStep(spec.returns), "n": FromInput("n")}
    saga = Saga(name, inputs=Inputs, steps=elements, returns=returns, retry=SAGA_RETRY,
                compensation_retry=SAGA_RETRY)
    nested = [s.child for s in saga.steps if isinstance(s, SubSaga)]
    return saga, [x for child in nested for x in [child, *declare_children(child)]]


def declare_children(saga: Saga) -> list[Saga]:
    """The sagas nested in a declared saga, at any depth."""
    found = []
    for step in saga.steps:
        if isinstance(step, SubSaga):
            found += [step.child, *declare_children(step.child)]
    return found


# -- the model's forecast ---------------------------------------------------------------------


@dataclass(frozen=True)
class Prediction:
    """What a saga does when nothing stops it: how it ends, where, and with what result."""

    kind: Literal["completed", "rolled_back", "needs_attention"]
    failing: int | None = None
    """The first element that fails, if any."""
    results: Mapping[str, Any] = field(default_factory=dict)
    """The results of the steps completed before it."""
    result: Any = None
    """The saga's result, when it completes."""


def way(spec: StepSpec, plan: SagaPlan) -> tuple[str, Fate] | None:
    """How a (non-nested) step completes, action or fallback; ``None``: it fails."""
    action = fate(plan.get((spec.name, "action"), ()), spec.attempts)
    if action.ok:
        return "action", action
    if spec.fallback is not None:
        fallback = fate(plan.get((spec.name, "fallback"), ()), spec.fallback.attempts)
        if fallback.ok:
            return "fallback", fallback
    return None


def predict(spec: SagaSpec, plan: Plan, n: int, key: str = "") -> Prediction:
    """What the saga ``spec`` (plan key ``key``) does with input ``n`` if not stopped.

    Its elements run in order, each once every element before it completed. The first that
    fails (a step, after its retries and its fallback; a group, as soon as one branch fails;
    a nested saga that does not complete) rolls the saga back; or, when the pivot completed
    before it (by its action or by its fallback: either way the step completed), leaves it
    for an operator.
    """
    results: dict[str, Any] = {}
    pivot_done = False
    for index in range(len(spec.elements)):
        failed = False
        for step in spec.members(index):
            result = step_result(step, plan, key, results, n)
            if result is None:
                failed = True
            else:
                results[step.name] = result
        if failed:
            kind: Literal["rolled_back", "needs_attention"] = (
                "needs_attention" if pivot_done else "rolled_back")
            return Prediction(kind, index, results)
        pivot_done = pivot_done or any(s.pivot for s in spec.members(index))
    return Prediction("completed", None, results, saga_result(spec, results, n))


def step_result(step: StepSpec, plan: Plan, key: str, results: Mapping[str, Any],
                n: int) -> Any:
    """The result a step completes with, or ``None`` when it fails."""
    if step.child is not None:
        child = predict(step.child, plan, n, step.name)
        return child.result if child.kind == "completed" else None
    done = way(step, plan[key])
    if done is None:
        return None
    value: Any = None
    if step.arg == ("input",):
        value = n
    elif step.arg:
        value = results[step.arg[1]]["attempt"]
    return {"step": step.name, "attempt": done[1].applied_at, "via": done[0], "value": value}


def saga_result(spec: SagaSpec, results: Mapping[str, Any], n: int) -> Any:
    """The saga's declared result (``returns``, else its last element's)."""
    if spec.returns is not None:
        return {"first": results[spec.returns], "n": n}
    last = spec.elements[-1]
    if isinstance(last, GroupSpec):
        return {b.name: results[b.name] for b in last.branches}
    return results[last.name]


# -- the harness ------------------------------------------------------------------------------

#: Hypothesis draws one of these per delivery: most deliveries are plain.
TWISTS = st.integers(0, 15)
NESTED_BEFORE, NESTED_AFTER, SELF_DUPLICATE, PAST_DUPLICATE = 12, 13, 14, 15
MAX_DELIVERIES = 600


@dataclass
class Hook:
    """What to do while an operation runs: before its effect, or after it."""

    when: Literal["before", "after"]
    run: Callable[[], None]
    fired: bool = False

    def fire(self, when: str) -> None:
        if when == self.when and not self.fired:
            self.fired = True
            self.run()


@dataclass(frozen=True)
class CancelRecord:
    """A cancel as it happened: when, the status before and after, and the pivot."""

    start: int
    before: SagaStatus | None
    after: SagaStatus
    pivot_passed: bool
    """Whether the pivot had completed, or was running, when the cancel came."""

    @property
    def took(self) -> bool:
        """Whether the cancel stopped the saga (it was running, short of its pivot)."""
        return self.before is SagaStatus.RUNNING and not self.pivot_passed


class WatchedTransport(RecordingTransport):
    """The recording transport, telling its owner of every message sent on its own."""

    def __init__(self, on_send: Callable[[Saga, str, Sequence[str], Role], None]) -> None:
        super().__init__()
        self.on_send = on_send

    def send(self, saga: Saga, saga_id: str, steps: Sequence[str], role: Role, *,
             headers: Mapping[str, str], undoes_fallback: bool = False,
             countdown: float | None = None) -> None:
        super().send(saga, saga_id, steps, role, headers=headers,
                     undoes_fallback=undoes_fallback, countdown=countdown)
        self.on_send(saga, saga_id, steps, role)


def op_of(envelope: Envelope) -> str:
    """The ledger's name of the operation a message runs."""
    if envelope.role is Role.COMPENSATION:
        return "undo_fallback" if envelope.undoes_fallback else "undo"
    return str(envelope.role.value)


@dataclass
class PropertyRun(InProcess):
    """The in-process runtime, its deliveries ordered by Hypothesis, faults and all.

    One wiring serves every example of a test (:meth:`reset` between them); a lost worker's
    attempt is claimed by :attr:`lost_runtime`, whose lease has run out already, so the
    message that comes back finds the lease expired, as it would after the lease time.
    """

    def __post_init__(self) -> None:
        super().__post_init__()
        self.lost_runtime = Runtime(self.store, self.driver, self.nested, self.outbox,
                                    lease_s=-1.0, check_event=lambda name, payload: [])
        self.reset(Scenario(SagaSpec(()), {}))

    def reset(self, scenario: Scenario) -> None:
        """Forget the example before (its keys too) and get ready for ``scenario``."""
        self.forget()
        self.scenario = scenario
        self.registry = SagaRegistry()
        self.driver.registry = self.registry
        self.transport = WatchedTransport(self._sent)
        self.driver.transport = self.transport
        self.history: list[Message] = []
        self.running: list[tuple[str, str, str]] = []
        self.sent_branches: dict[tuple[str, str], set[str]] = {}
        self.violations: list[str] = []
        """What the harness saw go wrong inside the engine's calls (raising there would be
        taken for a transport failure)."""
        self.held: list[Message] = []
        """Messages of lost workers that the broker gives back only once the queue is empty."""
        self.data: st.DataObject | None = None
        self.cancel: CancelRecord | None = None
        self.cancel_pending = scenario.cancel
        self.lost_seen = False
        self.deliveries = 0
        self.top_id = ""
        self.spec_of: dict[str, SagaSpec] = {}

    # -- starting ---------------------------------------------------------------------------

    def launch(self, name: str) -> str:
        """Declare the scenario's saga as ``name`` and start it."""
        saga, nested = declare(self.scenario.spec, name)
        for child in nested:
            self.registry.add(child)
        plans = {}
        for key, spec in tree(self.scenario.spec):
            saga_name = name if not key else child_name(name, key)
            plans[saga_name] = self.scenario.plan[key]
            self.spec_of[saga_name] = spec
        LEDGER.reset(plans)
        self.top_id = self.start(saga, {"n": self.scenario.n})
        return self.top_id

    # -- delivering -------------------------------------------------------------------------

    def drive(self, data: st.DataObject) -> None:
        """Deliver until nothing is queued and every saga of the tree is final.

        A lost worker may leave a compensation awaiting an action whose outcome nobody will
        report: then, as the recovery sweep would once its attention time came, the
        unfinished sagas are resumed. Without a lost worker, a saga left unfinished with
        nothing queued is stuck: that fails the example.
        """
        self.data = data
        for _ in range(5):
            while self.transport.queue or self.held:
                while self.transport.queue:
                    self.turn(data, depth=0)
                self.transport.queue.extend(self.held)
                self.held.clear()
            if self.cancel_pending is not None:
                self.cancel_now()  # its moment never came: cancel now, at the end
                continue
            open_ids = [i for i in self.tree_ids() if not self._final(i)]
            if not open_ids and not self.transport.queue:
                return
            assert self.lost_seen or self.transport.queue, (
                f"stuck: {[(i, self.store.status(i)) for i in open_ids]} with nothing "
                "queued, and no worker was lost")
            for saga_id in open_ids:
                self.supervisor.resume(saga_id)
        raise AssertionError("still not final after five resumes")

    def turn(self, data: st.DataObject, depth: int) -> None:
        """Deliver one queued message of Hypothesis's choosing, maybe with a twist."""
        self.deliveries += 1
        number = self.deliveries
        assert number <= MAX_DELIVERIES, f"still delivering after {MAX_DELIVERIES}"
        due = self.cancel_pending
        if depth == 0 and due is not None and due.when == "between" and due.at <= number:
            self.cancel_now()
        queue = self.transport.queue
        if not queue:
            return
        index = data.draw(st.integers(0, len(queue) - 1)) if len(queue) > 1 else 0
        twist = data.draw(TWISTS) if depth == 0 else 0
        if twist == PAST_DUPLICATE and self.history:
            queue.append(self.history[data.draw(st.integers(0, len(self.history) - 1))])
        message = queue.pop(index)
        hook = None
        stop = self.cancel_pending
        cancels = depth == 0 and stop is not None and stop.at == number
        if cancels and stop is not None and stop.when != "between":
            hook = Hook(stop.when, self.cancel_now)
        elif twist in (NESTED_BEFORE, NESTED_AFTER):
            hook = Hook("before" if twist == NESTED_BEFORE else "after",
                        lambda: self.turn(data, depth + 1))
        elif twist == SELF_DUPLICATE:
            hook = Hook("before", lambda: self.hand(message, None))
        self.hand(message, hook)
        if cancels and self.cancel_pending is not None:
            self.cancel_now()  # nothing ran to cancel during: cancel right after

    def cancel_now(self) -> None:
        """Cancel the top saga, noting the status before and whether the pivot passed."""
        self.cancel_pending = None
        before = self.store.status(self.top_id)
        passed = self._pivot_passed()
        start = LEDGER.tick()
        after = self.supervisor.cancel(self.top_id)
        self.cancel = CancelRecord(start, before, after, passed)

    def _pivot_passed(self) -> bool:
        pivot = self.scenario.spec.pivot()
        if pivot is None:
            return False
        if any((self.top_id, pivot.name, op) in self.running for op in FORWARD_OPS):
            return True
        return any(c.applied for c in LEDGER.calls_of(self.top_id, pivot.name, FORWARD_OPS))

    def hand(self, message: Message, hook: Hook | None) -> None:
        """Deliver one message as a Celery worker would (``support.py``), lost or not."""
        envelope = message.envelope
        self.history.append(message)
        if message.task_id in self.transport.revoked:
            return
        lost = self._will_be_lost(envelope)
        runtime = self.lost_runtime if lost else self.runtime
        try:
            runtime.deliver(envelope, self._call(envelope, None if lost else hook))
        except WorkerLost:
            self.lost_seen = True
            self._lost(message)
            return
        except RetryIn:
            self.transport.queue.append(message)
            return
        except Skip:
            return
        except Exception as error:
            if envelope.role is Role.COMPENSATION:
                self.runtime.compensation_failed(envelope, error)
            else:
                self.runtime.step_failed(envelope, error)
            return
        if message.chain:
            following = message.chain[0]
            saga = self.driver.definition_of(following.saga, following.saga_id)
            self.transport.queue.append(Message(following, _task_id(saga, following),
                                                message.chain[1:]))

    def _lost(self, message: Message) -> None:
        """The worker died: the broker gives the message back (``reject_on_worker_lost``),
        at once or once the queue is empty; a cancel planned may come in between.
        """
        data = self.data
        later = data is not None and data.draw(st.booleans())
        (self.held if later else self.transport.queue).append(message)
        if data is not None and self.cancel_pending is not None and data.draw(st.booleans()):
            self.cancel_now()

    def _will_be_lost(self, envelope: Envelope) -> bool:
        """Whether the attempt this message would claim is planned to lose its worker."""
        op = op_of(envelope)
        outcomes = LEDGER.plans.get(envelope.saga, {}).get((envelope.step, op), ())
        if not any(o in LOST for o in outcomes):
            return False
        attempt = len(LEDGER.calls_of(envelope.saga_id, envelope.step, [op])) + 1
        return attempt <= len(outcomes) and outcomes[attempt - 1] in LOST

    def _call(self, envelope: Envelope, hook: Hook | None) -> Callable[..., Any]:
        saga = self.driver.definition_of(envelope.saga, envelope.saga_id)
        task = saga.step(envelope.step).task_for(envelope.role, envelope.undoes_fallback)
        assert task is not None, f"{envelope} has no task"
        marker = (envelope.saga_id, envelope.step, op_of(envelope))

        def call(ctx: StepContext, **arguments: Any) -> Any:
            start = LEDGER.tick()
            self.running.append(marker)
            try:
                if hook is not None:
                    hook.fire("before")
                LEDGER.starts.append(start)
                try:
                    try:
                        value = task.fn(ctx, **arguments)
                    except WorkerLost:
                        raise
                    except Exception:
                        if hook is not None:
                            hook.fire("after")
                        raise
                    if hook is not None:
                        hook.fire("after")
                    return value
                finally:
                    LEDGER.starts.pop()
            finally:
                self.running.remove(marker)

        return call

    def _sent(self, saga: Saga, saga_id: str, steps: Sequence[str], role: Role) -> None:
        """Check a group's bound whenever branches are sent."""
        if role is not Role.ACTION or not steps:
            return
        group = saga.group_of(steps[0])
        if group is None:
            return
        sent = self.sent_branches.setdefault((saga_id, group.name), set())
        sent.update(steps)
        if group.max_concurrency is None:
            return
        plan = LEDGER.plans.get(saga.name, {})
        in_flight = set()
        for branch in sent:
            calls = LEDGER.calls_of(saga_id, branch, ["action"])
            if any(c.ending in ("returned", "replayed") for c in calls):
                continue
            end = fate(plan.get((branch, "action"), ()),
                       saga.retry_for(saga.step(branch)).attempts)
            if not end.ok and calls and calls[-1].attempt >= end.attempts:
                continue
            in_flight.add(branch)
        if len(in_flight) > group.max_concurrency:
            self.violations.append(f"group {group.name} (bound {group.max_concurrency}) has "
                                   f"{sorted(in_flight)} in flight at once")

    # -- reading ----------------------------------------------------------------------------

    def tree_ids(self) -> list[str]:
        """The ids of the top saga and of every nested saga recorded."""
        found = [self.top_id]
        for saga_id in found:
            name = self.store.name_of(saga_id)
            spec = self.spec_of.get(name or "")
            for step in spec.steps() if spec else []:
                child = child_id_of(saga_id, step.name)
                if step.child is not None and self.store.status(child) is not None:
                    found.append(child)
        return found

    def _final(self, saga_id: str) -> bool:
        status = self.store.status(saga_id)
        return status is not None and status in FINAL_STATUSES

    def runs(self) -> dict[str, SagaRun]:
        """Every run of the tree, as recorded."""
        return {saga_id: self.load(saga_id) for saga_id in self.tree_ids()}

    def redeliver_everything(self) -> None:
        """Deliver once more every message ever delivered, revoked or not, and what follows.

        Each finds its saga final, or its operation ended: none may change anything.
        """
        seen: set[Envelope] = set()
        for message in list(self.history):
            if message.envelope in seen:
                continue
            seen.add(message.envelope)
            self.transport.queue.append(message)
        self.transport.revoked.clear()
        budget = MAX_DELIVERIES
        while self.transport.queue and budget:
            budget -= 1
            self.hand(self.transport.queue.pop(0), None)
        assert not self.transport.queue, "redelivering went on and on"


# -- the model's verdict ------------------------------------------------------------------------

#: The log's entries for final states (``saga.failed`` also marks the turn to compensating).
FINAL_EVENTS = frozenset(f"saga.{s.value}" for s in FINAL_STATUSES) - {"saga.failed"}
RECORDED = ("returned", "replayed")
Kind = Literal["completed", "rolled_back", "needs_attention", "cancelled", "undone"]


@dataclass
class View:
    """One saga of the tree: its shape, plan key, run as recorded, and nested sagas."""

    spec: SagaSpec
    key: str
    saga_id: str
    run: SagaRun
    children: dict[str, View] = field(default_factory=dict)
    """By the step that runs each."""

    @property
    def events(self) -> list[str]:
        return [t.event for t in self.run.log]

    def subtree(self) -> list[View]:
        """This view and every view nested in it."""
        return [self, *(v for child in self.children.values() for v in child.subtree())]


class Model:
    """Checks one example's run against what its shape, plan and ledger say.

    The plan alone says how a saga ends when nothing stops it (:func:`predict`); what the
    ledger saw (which actions applied an effect, when the cancel came) says what a rollback
    must undo, since which branches of a failing group ran depends on the interleaving.
    """

    def __init__(self, scenario: Scenario, runs: Mapping[str, SagaRun], calls: list[Call],
                 cancel: CancelRecord | None, top_id: str) -> None:
        self.scenario, self.plan, self.calls, self.cancel = (
            scenario, scenario.plan, calls, cancel)
        self.top = self._view(scenario.spec, "", top_id, runs)

    def _view(self, spec: SagaSpec, key: str, saga_id: str, runs: Mapping[str, SagaRun]
              ) -> View:
        view = View(spec, key, saga_id, runs[saga_id])
        for step in spec.steps():
            child_id = child_id_of(saga_id, step.name)
            if step.child is not None and child_id in runs:
                view.children[step.name] = self._view(step.child, step.name, child_id, runs)
        return view

    # -- reading the ledger -------------------------------------------------------------------

    def calls_of(self, view: View, step: str, ops: Sequence[str]) -> list[Call]:
        return [c for c in self.calls
                if c.saga_id == view.saga_id and c.step == step and c.op in ops]

    def undo_calls(self, views: Sequence[View]) -> list[Call]:
        ids = {v.saga_id for v in views}
        return [c for c in self.calls if c.saga_id in ids and c.op in UNDO_OPS]

    def done_at(self, view: View, step: StepSpec) -> int | None:
        """When the step completed (the clock reading of its completing call), if it did."""
        if step.child is not None:
            child = view.children.get(step.name)
            if child is None or "saga.completed" not in child.events:
                return None
            return max(c.start for c in self.calls if c.saga_id == child.saga_id
                       and c.op in FORWARD_OPS and c.ending in RECORDED)
        return next((c.start for c in self.calls_of(view, step.name, FORWARD_OPS)
                     if c.ending in RECORDED), None)

    def started_at(self, view: View, step: StepSpec) -> int | None:
        """When the step's first call began (a nested saga's first), if it ran at all."""
        if step.child is not None:
            child = view.children.get(step.name)
            ids = {v.saga_id for v in child.subtree()} if child else set()
            starts = [c.start for c in self.calls if c.saga_id in ids]
        else:
            starts = [c.start for c in self.calls_of(view, step.name, FORWARD_OPS)]
        return min(starts, default=None)

    # -- the checks ---------------------------------------------------------------------------

    def check(self) -> None:
        """Check every invariant; an :class:`AssertionError` says which and where."""
        self.check_ledger()
        cancel = self.cancel
        if cancel is not None:
            if cancel.took:
                assert cancel.after in (SagaStatus.COMPENSATING, SagaStatus.CANCELLED), cancel
            else:
                assert cancel.after is cancel.before, (
                    f"a cancel that could not stop the saga changed it: {cancel}")
        self.check_view(self.top, self.kind_of(self.top, top=True))

    def kind_of(self, view: View, *, top: bool = False) -> Kind:
        """How the saga of ``view`` must have ended, as the model sees it."""
        if top and self.cancel is not None and self.cancel.took:
            return "cancelled"
        if "saga.undoing" in view.events:
            return "undone"
        if "saga.cancelling" in view.events:
            assert self.cancel is not None and self.cancel.took, (
                f"{view.run.name} was cancelled, but its parent was not")
            return "cancelled"
        return predict(view.spec, self.plan, self.scenario.n, view.key).kind

    def check_ledger(self) -> None:
        """Across the tree: attempts counted once each, no effect applied twice, no
        compensation of an operation that never ran, and a compensation handed the result
        its action recorded.
        """
        by_op: dict[tuple[str, str, str], list[Call]] = {}
        for call in self.calls:
            by_op.setdefault((call.saga_id, call.step, call.op), []).append(call)
        for (saga_id, step, op), calls in by_op.items():
            where = f"{op} of {step} in {saga_id}"
            assert [c.attempt for c in calls] == list(range(1, len(calls) + 1)), (
                f"{where}: attempts {[c.attempt for c in calls]}")
            assert sum(c.applied for c in calls) <= 1, f"{where}: its effect applied twice"
        for call in self.calls:
            if call.op in FORWARD_OPS:
                others = [c for c in self.calls if c.saga_id == call.saga_id
                          and c.step == call.step and c.op in FORWARD_OPS and c.applied]
                assert len(others) <= 1, f"{call.step}: both its action and fallback applied"
                continue
            assert call.undoes_fallback == (call.op == "undo_fallback"), call
            target = "action" if call.op == "undo" else "fallback"
            before = [c for c in self.calls if c.saga_id == call.saga_id and c.step == call.step
                      and c.op == target and c.start < call.start]
            assert any(c.applied or c.ending == "lost" for c in before), (
                f"{call.op} of {call.step} ran, but its {target} never did (or never applied)")
            recorded = [c for c in before if c.ending in RECORDED]
            role = "action" if target == "action" else "fallback"
            expected = None
            if recorded:
                expected = LEDGER.effects[f"{call.saga_id}:{call.step}:{role}"].result
            assert call.received == expected, (
                f"{call.op} of {call.step} was handed {call.received!r}, not {expected!r}")

    def check_view(self, view: View, kind: Kind) -> None:
        """One saga: its one final state, its forward path, and how it ended."""
        run = view.run
        finals = [e for e in view.events if e in FINAL_EVENTS]
        name = f"saga {run.name} ({kind})"
        if kind == "undone":
            assert len(finals) == 2 and finals[0] == "saga.completed", f"{name}: {finals}"
        else:
            assert len(finals) == 1, f"{name} recorded final states {finals}"
        assert finals[-1] == f"saga.{run.status.value}", f"{name}: {finals} vs {run.status}"
        self.check_forward(view)
        prediction = predict(view.spec, self.plan, self.scenario.n, view.key)
        if kind in ("completed", "undone"):
            assert prediction.kind == "completed", f"{name}: the model says {prediction.kind}"
            self.check_done(view, range(len(view.spec.elements)))
            assert run.result == prediction.result, (
                f"{name}: result {run.result!r}, declared {prediction.result!r}")
        if kind == "completed":
            assert run.status is SagaStatus.COMPLETED, f"{name} ended {run.status.value}"
            assert not self.undo_calls(view.subtree()), f"{name}: compensations ran"
        elif kind == "needs_attention":
            assert run.status is SagaStatus.NEEDS_ATTENTION, f"{name} ended {run.status.value}"
            self.check_stopped_at(view, prediction)
            assert not self.undo_calls([view]), f"{name}: compensations ran past its pivot"
        else:
            if kind == "rolled_back":
                self.check_stopped_at(view, prediction)
            self.check_rollback(view, kind)
        for child in view.children.values():
            self.check_view(child, self.kind_of(child))

    def check_forward(self, view: View) -> None:
        """Attempts within the policy; a fallback only after its action gave up; each
        element only after every element before it completed.
        """
        plan = self.plan[view.key]
        for step in view.spec.steps():
            if step.child is not None:
                continue
            action = self.calls_of(view, step.name, ["action"])
            end = fate(plan.get((step.name, "action"), ()), step.attempts)
            assert not action or action[-1].attempt <= end.attempts, (
                f"{step.name}: attempt {action[-1].attempt}, but it ends at {end.attempts}")
            fallback = self.calls_of(view, step.name, ["fallback"])
            if fallback:
                assert step.fallback is not None and not end.ok, step
                assert action and action[-1].attempt == end.attempts, (
                    f"{step.name}: its fallback ran before its action gave up")
                end = fate(plan.get((step.name, "fallback"), ()), step.fallback.attempts)
                assert fallback[-1].attempt <= end.attempts, step
        for index in range(1, len(view.spec.elements)):
            for step in view.spec.members(index):
                start = self.started_at(view, step)
                if start is None:
                    continue
                for earlier in (s for i in range(index) for s in view.spec.members(i)):
                    done = self.done_at(view, earlier)
                    assert done is not None and done < start, (
                        f"{step.name} started before {earlier.name} completed")

    def check_done(self, view: View, elements: range) -> None:
        for index in elements:
            for step in view.spec.members(index):
                assert self.done_at(view, step) is not None, (
                    f"{view.run.name}: {step.name} did not complete")

    def check_stopped_at(self, view: View, prediction: Prediction) -> None:
        """The saga stopped at the element the model says failed: what came before it
        completed, what comes after it never started.
        """
        failing = prediction.failing
        assert failing is not None, f"{view.run.name}: the model says it {prediction.kind}"
        self.check_done(view, range(failing))
        names = [s.name for s in view.spec.members(failing)]
        assert view.run.failed_step in names, (
            f"{view.run.name} failed at {view.run.failed_step}, not in {names}")
        for later in range(failing + 1, len(view.spec.elements)):
            for step in view.spec.members(later):
                assert self.started_at(view, step) is None, f"{step.name} ran after a failure"

    def check_rollback(self, view: View, kind: Kind) -> None:
        """Every effect that completed is undone exactly once, by the compensation of the
        way it completed, after its retries; those that gave up are named; stages in reverse.
        """
        run, name = view.run, view.run.name
        intent = SagaStatus.CANCELLED if kind == "cancelled" else SagaStatus.COMPENSATED
        if kind == "cancelled":
            assert self.cancel is not None
            late = [c for v in view.subtree() for c in self.calls
                    if c.saga_id == v.saga_id and c.op in FORWARD_OPS
                    and c.start > self.cancel.start]
            assert not late, f"{name}: {late[0].op} of {late[0].step} began after the cancel"
        gave_up: set[str] = set()
        undone = 0
        plan = self.plan[view.key]
        for step in view.spec.steps():
            if step.child is not None:
                child = view.children.get(step.name)
                if child is not None and "saga.completed" in child.events:
                    assert "saga.undoing" in child.events, f"{name}: {step.name} not undone"
                    if child.run.status is SagaStatus.COMPENSATION_FAILED:
                        gave_up.add(step.name)
                    else:
                        undone += 1
                continue
            forward = self.calls_of(view, step.name, FORWARD_OPS)
            undos = self.calls_of(view, step.name, UNDO_OPS)
            effect = next((c for c in forward if c.applied), None)
            basis = effect or next((c for c in forward if c.ending == "lost"), None)
            declared = basis is not None and (
                step.undo if basis.op == "action" else bool(step.fallback and step.fallback.undo))
            if basis is None or not declared:
                assert not undos, f"{name}: {step.name} compensated, with nothing to undo"
                continue
            op = "undo" if basis.op == "action" else "undo_fallback"
            assert all(c.op == op for c in undos), f"{name}: {step.name} undone the wrong way"
            assert undos or effect is None, f"{name}: {step.name} completed, never undone"
            if not undos:
                continue  # lost before its effect, and never released: nothing to undo
            end = fate(plan.get((step.name, op), ()), step.undo_attempts)
            assert undos[-1].attempt == end.attempts, (
                f"{name}: {op} of {step.name} ended at attempt {undos[-1].attempt}, "
                f"planned {end.attempts}")
            applied = sum(c.applied for c in undos)
            if end.ok:
                assert applied == (effect is not None), f"{name}: {step.name} undone {applied}x"
                undone += 1
            else:
                # It gave up; only a last attempt lost after undoing may have undone it.
                unknown = undos[-1].ending == "lost" and undos[-1].applied
                assert applied == unknown, f"{name}: {step.name} undone, yet gave up"
                gave_up.add(step.name)
        assert set(run.undone) == gave_up, f"{name}: undone {run.undone}, gave up {gave_up}"
        expected = SagaStatus.COMPENSATION_FAILED if gave_up else intent
        assert run.status is expected, f"{name} ended {run.status.value}, not {expected.value}"
        assert len(run.compensations) == undone, f"{name}: {run.compensations}, {undone}"
        self.check_stages(view)

    def check_stages(self, view: View) -> None:
        """Compensations run in stages, last element first; a nested saga's in its step's."""
        stages = [(c.start, view.spec.element_of(c.step)) for c in self.undo_calls([view])]
        for step, child in view.children.items():
            stages += [(c.start, view.spec.element_of(step))
                       for c in self.undo_calls(child.subtree())]
        order = [element for _, element in sorted(stages)]
        assert order == sorted(order, reverse=True), (
            f"{view.run.name}: compensations by element {order}, not in reverse")


def snapshot(runs: Mapping[str, SagaRun]) -> dict[str, Any]:
    """What must not change once every saga is final (the log may grow: duplicates)."""
    return {saga_id: (run.status, run.result, run.undone, run.compensations,
                      [s.model_dump() for s in run.steps]) for saga_id, run in runs.items()}


def run_scenario(wiring: PropertyRun, scenario: Scenario, data: st.DataObject, name: str
                 ) -> SagaRun:
    """Run one example to its end, redeliver everything, and check the model's verdict."""
    wiring.reset(scenario)
    top_id = wiring.launch(name)
    wiring.drive(data)
    assert not wiring.violations, wiring.violations
    runs = wiring.runs()
    calls = len(LEDGER.calls)
    wiring.redeliver_everything()
    assert snapshot(wiring.runs()) == snapshot(runs), "a redelivery changed a final saga"
    assert len(LEDGER.calls) == calls, f"a redelivery ran {LEDGER.calls[calls:]}"
    Model(scenario, runs, LEDGER.calls, wiring.cancel, top_id).check()
    return runs[top_id]
