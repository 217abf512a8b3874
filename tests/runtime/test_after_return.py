"""What goes wrong after a step's function returned: it never undoes or reruns the step.

The errback fires when anything fails after the task body: with the broker down, Celery's
publish of the chain's next message fails after the step was recorded completed. That is
no failure of the step: the saga keeps running and the recovery sweep drives it on.
"""

from __future__ import annotations

from kombu.exceptions import OperationalError

from sagaline import Saga, Step
from sagaline.runtime import Envelope
from sagaline.status import Role, SagaStatus, StepStatus

from .support import InProcess, Nothing, succeed, undo

three = Saga("rt_after_return", inputs=Nothing, steps=[
    Step("a", succeed, compensation=undo),
    Step("b", succeed, compensation=undo),
    Step("c", succeed, compensation=undo),
])


def test_a_send_that_fails_after_a_step_completed_leaves_the_saga_to_the_sweep(
    rt: InProcess,
) -> None:
    """Step ``b`` completed and the chain could not send ``c`` (the broker went away): the
    errback does not roll the saga back; it stays running, the sweep sends ``c``, and the
    saga completes with each action run once and nothing undone.
    """
    saga_id = rt.start(three)
    rt.deliver("a:action")
    rt.deliver("b:action")
    rt.take("c:action")  # the publish that failed: the message never reached the broker

    rt.runtime.step_failed(Envelope(saga_id, three.name, "b", Role.ACTION),
                           OperationalError("Error 111 connecting to the broker"))

    assert rt.load(saga_id).status is SagaStatus.RUNNING
    assert rt.transport.queued() == []
    assert rt.supervisor.resume(saga_id) == "resumed"
    rt.run()
    run = rt.load(saga_id)
    assert run.status is SagaStatus.COMPLETED
    assert [s.status for s in run.steps] == [StepStatus.COMPLETED] * 3
    assert rt.calls == ["a:action", "b:action", "c:action"]


def test_a_step_that_failed_for_good_still_rolls_the_saga_back(rt: InProcess) -> None:
    """The control: an errback for a step that was not recorded completed fails the saga,
    and what completed before it is undone.
    """
    saga_id = rt.start(three)
    rt.deliver("a:action")
    rt.take("b:action")

    rt.runtime.step_failed(Envelope(saga_id, three.name, "b", Role.ACTION),
                           RuntimeError("b failed in a way its worker could not record"))

    rt.run()
    run = rt.load(saga_id)
    assert run.status is SagaStatus.COMPENSATED
    assert run.failed_step == "b"
    assert rt.calls == ["a:action", "a:compensation"]
