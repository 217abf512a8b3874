"""Property tests of the runtime, in-process: generated sagas under generated faults.

Hypothesis draws a saga's shape (steps, bounded groups, fallbacks, a pivot, nested sagas), a
fault plan (which attempts of which operations fail, retryably or for good, or lose their
worker), a cancel at some point, and, delivery by delivery, the order in which queued
messages arrive, duplicates of messages, and deliveries nested in a running operation. The
model (``model.py``) says what the run must have done; see :class:`~.model.Model`.

Every property uses ``derandomize=True``: the same examples on every run, in CI too. The
engine bugs they found follow at the end, shrunk, as plain tests.
"""

from __future__ import annotations

import itertools
import logging
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from uuid import uuid4

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sagaline import Fallback, RedisStore, RetryPolicy, Saga, Step
from sagaline.runtime import Runtime
from sagaline.status import SagaStatus, StepStatus

from .model import (
    LEDGER,
    LOST_AFTER,
    PropertyRun,
    SagaSpec,
    Scenario,
    StepSpec,
    WorkerLost,
    declare,
    run_scenario,
    scenarios,
)
from .support import InProcess, Nothing, backup, refuse, succeed, undo

#: Generated sagas per property; the four run 3,000 top-level sagas (and their children).
EXAMPLES = {"forward": 900, "cancel": 700, "lost": 700, "nested": 700}
NAMES = itertools.count()
TALLY: Counter[str] = Counter()
OUTCOMES: Counter[str] = Counter()


@pytest.fixture(scope="module")
def wiring(store: RedisStore) -> Iterator[PropertyRun]:
    """One in-process wiring for the module, under a key prefix of its own; each example
    starts by deleting the keys the example before left.
    """
    run = PropertyRun(store.client, prefix=f"rt-prop-{uuid4().hex[:8]}:")
    engine_log = logging.getLogger("sagaline")
    level = engine_log.level
    engine_log.setLevel(logging.CRITICAL)  # thousands of planned failures: not worth a line
    try:
        yield run
    finally:
        engine_log.setLevel(level)
        run.forget()
    total = sum(TALLY.values())
    print(f"\nproperty tests: {total} generated sagas ({dict(TALLY)}); "
          f"ended {dict(OUTCOMES)}")


def run_property(kind: str, wiring: PropertyRun, strategy: st.SearchStrategy[Scenario]) -> None:
    """Run ``EXAMPLES[kind]`` generated sagas of ``strategy`` and check each; count them."""

    @settings(max_examples=EXAMPLES[kind], deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(scenario=strategy, data=st.data())
    def prop(scenario: Scenario, data: st.DataObject) -> None:
        run = run_scenario(wiring, scenario, data, f"rt_prop_{next(NAMES)}")
        TALLY[kind] += 1
        OUTCOMES[run.status.value] += 1

    before = TALLY[kind]
    prop()
    assert TALLY[kind] - before >= EXAMPLES[kind], f"only {TALLY[kind] - before} sagas ran"


def test_a_saga_not_stopped_ends_as_its_fault_plan_says_whatever_the_interleaving(
    wiring: PropertyRun,
) -> None:
    """Any shape, any faults, any delivery order, duplicates and overlapping deliveries:
    one final state; completed with exactly the declared result, or each completed effect
    undone once in reverse stages, the compensations that gave up named, or left for an
    operator past its pivot; no effect applied twice.
    """
    run_property("forward", wiring, scenarios())


def test_a_cancel_at_any_point_undoes_exactly_what_completed_and_nothing_runs_after_it(
    wiring: PropertyRun,
) -> None:
    """Cancelled between deliveries or while an operation runs (before or after its
    effect): a running saga short of its pivot is undone (what completes late too) and ends
    cancelled or compensation_failed; otherwise the cancel changes nothing.
    """
    run_property("cancel", wiring, scenarios(cancel=True))


def test_a_worker_lost_mid_operation_is_made_good_and_no_effect_is_applied_twice(
    wiring: PropertyRun,
) -> None:
    """A worker dies before or after its operation's effect; the message comes back. The
    lost attempt counts: if the policy allows another, it runs (finding a lost attempt's
    effect by its idempotency key); if not, the operation fails for good. Either way the saga
    ends as planned, no effect is applied twice, and an action whose outcome nobody knows is
    compensated when the saga rolls back.
    """
    run_property("lost", wiring, scenarios(cancel=True, losses=True))


def test_nested_sagas_complete_fail_and_roll_back_with_their_parent_steps(
    wiring: PropertyRun,
) -> None:
    """A nested saga's end is its step's: it completes with the child's result, fails when
    the child does not complete, and the parent's rollback rolls back a completed child in
    the child's stage; a cancel stops a running child too.
    """
    run_property("nested", wiring, scenarios(cancel=True, children=True))


# -- the counterexamples the properties found, shrunk -------------------------------------------
#
# A pivot commits the saga once it completed (``Saga``'s docstring). A step whose action gave
# up completes by its fallback (``Fallback``'s docstring: later steps read the fallback's
# result as the step's). Yet the store's ``pivot_passed`` (``store/lua/_prelude.lua``) looks
# only at ``action:<pivot>:status``; so a pivot completed by its fallback does not count, and
# ``fail_saga.lua`` rolls the saga back past it, and ``abort.lua`` cancels it.

pivot_by_fallback = Saga("rt_prop_pivot_by_fallback", inputs=Nothing, steps=[
    Step("book", succeed, compensation=undo),
    Step("commit", refuse, pivot=True, fallback=Fallback(backup)),
    Step("ship", refuse, retry=RetryPolicy(attempts=2, initial=timedelta(0), jitter=0)),
])

pivot_by_fallback_then_more = Saga("rt_prop_pivot_by_fallback_more", inputs=Nothing, steps=[
    Step("book", succeed, compensation=undo),
    Step("commit", refuse, pivot=True, fallback=Fallback(backup)),
    Step("ship", succeed, retry=RetryPolicy(attempts=2, initial=timedelta(0), jitter=0)),
])


def test_a_pivot_completed_by_its_fallback_commits_so_a_later_failure_waits_for_an_operator(
    rt: InProcess,
) -> None:
    """The pivot's action gives up and its fallback completes it; a step after the pivot
    then fails for good. The saga was committed: it must turn needs_attention, as it does
    when the pivot's action completed, and undo nothing.
    """
    saga_id = rt.start(pivot_by_fallback)

    delivered = rt.run()

    assert [(d.message.name, d.outcome) for d in delivered][:4] == [
        ("book:action", "returned"), ("commit:action", "skip"),
        ("commit:fallback", "returned"), ("ship:action", "failed")]
    run = rt.load(saga_id)
    fallback = run.step("commit").fallback
    assert fallback is not None and fallback.status is StepStatus.COMPLETED
    assert run.status is SagaStatus.NEEDS_ATTENTION, (
        f"rolled back past a completed pivot: {run.status.value}, undone {rt.undone(saga_id)}")
    assert rt.undone(saga_id) == []


def test_a_cancel_after_a_pivot_completed_by_its_fallback_changes_nothing(rt: InProcess) -> None:
    """Past its pivot a saga cannot be cancelled (the cancel leaves it running, as when the
    pivot's action completed); a pivot completed by its fallback is passed just the same.
    """
    saga_id = rt.start(pivot_by_fallback_then_more)
    rt.deliver("book:action")
    assert rt.deliver("commit:action").outcome == "skip"
    assert rt.deliver("commit:fallback").outcome == "returned"

    status = rt.supervisor.cancel(saga_id)

    assert status is SagaStatus.RUNNING, f"cancelled past a completed pivot: {status.value}"
    rt.run()
    assert rt.load(saga_id).status is SagaStatus.COMPLETED
    assert rt.undone(saga_id) == []


# An attempt whose worker died (its lease ran out) counts as a failed attempt; on the last
# one the policy allows, the message that comes back fails the action for good
# (``begin.lua`` answers ``lost``; ``AttemptsLostError``). Its outcome is unknown: the
# effect may be in place. Yet ``plan_rollback`` (``_prelude.lua``) plans compensations only
# for actions recorded completed (or running), so the rollback leaves that effect in place
# and the saga ends compensated. An awaited action whose worker was lost is compensated
# (``awaited.lua``: "compensations undo nothing when there is nothing to undo"); this one
# is not.


def test_an_action_lost_with_its_worker_on_its_last_attempt_is_undone_when_rolled_back(
    rt: InProcess,
) -> None:
    """The charge applies its effect, then its worker dies, on the last attempt the engine
    allows a lost operation (here no re-run: ``max_recoveries`` 0). The message comes back
    and the action fails for good, its outcome unknown: the rollback must run its
    compensation, which finds the charge by its idempotency key and undoes it.
    """
    saga, _ = declare(SagaSpec((StepSpec("charge", attempts=1, undo=True, undo_attempts=1),)),
                      "rt_prop_lost_charge")
    LEDGER.reset({saga.name: {("charge", "action"): (LOST_AFTER,)}})
    saga_id = rt.start(saga, {"n": 0})
    message = rt.take("charge:action")
    dying = Runtime(rt.store, rt.driver, rt.nested, rt.outbox, lease_s=-1.0,
                    check_event=lambda name, payload: [])
    with pytest.raises(WorkerLost):
        dying.deliver(message.envelope, rt._caller(message.envelope))

    rt.runtime.max_recoveries = 0
    again = rt.deliver_message(message)  # reject_on_worker_lost: the broker gives it back

    assert again.outcome == "failed"
    rt.run()
    run = rt.load(saga_id)
    assert run.status is SagaStatus.COMPENSATED
    assert (LEDGER.calls[0].op, LEDGER.calls[0].applied) == ("action", True)
    assert [c.op for c in LEDGER.calls if c.op == "undo"] == ["undo"], (
        "the saga ended compensated, but the charge its lost attempt made was never undone")
