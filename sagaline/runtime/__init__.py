"""The runtime: how a saga runs, in plain Python. Read this first; it is the algorithm.

Nothing here imports Celery. The runtime decides what runs next and asks a
:class:`~sagaline.runtime.message.Transport` (``sagaline/transport.py``, for Celery) to carry
it; the transport hands every delivery back. Every change of a run's record is one Lua
script of the store (``sagaline/store/``); the definition (``saga.py``, ``step.py``,
``policy.py``) answers what the saga declared.

1. **Start** (``driver.py``: :meth:`Driver.launch`). The engine validates the inputs; the
   driver records the run as ``running`` (``create.lua``) and sends the forward path from
   the first element (:meth:`Driver.forward`): a step, the chain of steps up to the next
   group (one message each, one errback for the chain); a group, the branches its bound
   lets start; past the last element, the saga is finished. A refused send records the
   run ``failed``.

2. **An attempt** (``attempt.py``: :meth:`Runtime.deliver`), one delivery of a message for
   one operation (an action, its fallback, or a compensation):

   a. Claim an attempt (``begin.lua``). The claim refuses when the saga is not in a state
      where this may run (ended, or compensating while this is a forward step), when the
      operation already failed for good, or when another attempt holds a live lease (then
      the message comes back later: :class:`RetryIn`). An operation that completed before
      (the message came again) returns its recorded result; a message outside the chain
      (a branch, a fallback) is dropped instead (:class:`Skip`).
   b. Resolve the arguments from the recorded inputs and earlier results, build the
      :class:`~sagaline.StepContext`, and run the function while the heartbeat
      (``heartbeat.py``) renews the lease. Telemetry hears of the start and the end.
   c. A step in a chain: record the result (``complete.lua``); the chain sends the next
      step; the last step before a group opens the group; the last step of all records
      the saga's result and completes it.
   d. A branch of a group: the script that records it counts the branches and returns the
      next branch to start (the bound holds) or, to the last branch only, ``group_done``:
      then the driver sends what follows the group.
   e. A fallback (outside the chain), or a step whose result adds steps
      (:func:`~sagaline.add_steps`; the result is where they live, so every worker rebuilds
      the run's definition from it: :meth:`Driver.definition_of`): the driver sends what
      follows, and the chain stops.
   f. A compensation: record it; ``next_undo.lua`` says what the rollback has next (step 4).
   g. An action that completes after its saga was stopped makes its own compensation due.

3. **A failure** (``attempt.py``: ``Runtime._failed``). The retry policy decides: record
   the failed attempt and retry after its delay (:class:`RetryIn`); or, when it gives up and
   the step has a fallback, send the fallback; or record the final failure and raise. The
   raise reaches the errback, which the transport hands to :meth:`Runtime.step_failed`;
   :meth:`Driver.step_failed` turns the saga ``compensating`` once (``fail_saga.lua``, which
   plans the rollback), or ``needs_attention`` when a pivot completed before.

4. **The rollback, in stages** (``driver.py``: :meth:`Driver.continue_rollback`). The plan
   lists the completed steps, last first. ``next_undo.lua`` gives the next stage once every
   compensation of the stage before ended: one step, or a group's branches in parallel; a
   compensation whose action is still in flight waits for that action to end. Each
   compensation is a message of its own with its own errback; one that fails for good is
   recorded (and dead-lettered) by :meth:`Driver.compensation_failed` and the others go on.
   The last compensation concludes the saga ``compensated`` (``cancelled`` when it was
   cancelled), or ``compensation_failed`` when one gave up.

5. **Nested sagas** (``nested.py``). A :class:`~sagaline.SubSaga` step starts its child and
   waits without holding a worker; the child's end is listed in ``children_done`` and
   :meth:`NestedSagas.drain` delivers it to the parent's step (``child.lua``), which then goes
   on as in step 2c or fails as in step 3. Its compensation rolls the child back.

6. **After every delivery** (:meth:`Runtime.after`): settle the children that ended and
   publish the delivery's events from the outbox (``sagaline/events/outbox.py``), off the
   critical path.

7. **Signals** (``signals.py``). An action that needs something from outside (an
   approval, a webhook) calls ``ctx.wait_for(name, timeout=...)``: its attempt waits in the
   record (``signal.lua``) without a worker, and a signal of that name, sent with
   :meth:`Signals.send`, sends it again; its deadline sends it once more, to fail.

8. **Recovery and stopping** (``supervisor.py``). The sweep looks only at sagas whose
   attention time or deadline passed: a saga past its deadline is stopped and rolled back;
   another is claimed (``recover.lua``) and driven on from the first element not
   completed, or its rollback's current stage is sent again; one that made no progress
   too often is failed. Cancel stops a running saga the same way (queued messages are
   revoked, a running step is asked to stop) and rolls it back.
"""

from sagaline.runtime.attempt import Delivery, Runtime
from sagaline.runtime.driver import Driver
from sagaline.runtime.message import Envelope, RetryIn, Skip, Transport
from sagaline.runtime.nested import NestedSagas
from sagaline.runtime.signals import Signals
from sagaline.runtime.supervisor import StuckSaga, Supervisor

__all__ = ["Delivery", "Driver", "Envelope", "NestedSagas", "RetryIn", "Runtime", "Signals",
           "Skip", "StuckSaga", "Supervisor", "Transport"]
