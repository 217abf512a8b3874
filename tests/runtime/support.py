"""The runtime in-process: a recording transport, the engine's parts wired to it, and tasks.

No Celery app, no broker, no worker: :class:`RecordingTransport` keeps every message the
runtime sends in a queue, and :class:`InProcess` delivers them one at a time, the way a
Celery worker would, against a real Redis. A test decides which message is delivered when,
so every interleaving it needs is written out, and no test waits for anything.

What Celery does and the transport mimics:

- A chain's next task is sent only when the one before returned normally (not when it
  raised :class:`~sagaline.runtime.Skip`, :class:`~sagaline.runtime.RetryIn` or an error).
- :class:`~sagaline.runtime.RetryIn` sends the same message again (same task id, its chain
  and errback kept); the test need not wait the delay: it is recorded instead.
- A final error runs the message's errback once: the runtime's ``step_failed`` for an
  action or a fallback, ``compensation_failed`` for a compensation.
- A revoked task id is dropped when its message comes, never run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import redis
from pydantic import BaseModel

from sagaline import (
    NonRetryableError,
    RedisStore,
    Saga,
    SagaRegistry,
    SagaRun,
    SagaTask,
    StepContext,
    saga_task,
)
from sagaline.events.outbox import Outbox
from sagaline.ids import new_id
from sagaline.runtime import (
    Driver,
    Envelope,
    NestedSagas,
    RetryIn,
    Runtime,
    Skip,
    Supervisor,
)
from sagaline.status import Role

# -- the saga tasks the runtime tests use ---------------------------------------------------


class Refused(NonRetryableError):
    """A business failure: no retry can fix it."""


class Flaky(Exception):
    """A transient failure: the retry policy may retry it."""


class Nothing(BaseModel):
    """The runtime tests' sagas take no inputs."""


@saga_task("rt.succeed")
def succeed(ctx: StepContext) -> dict[str, Any]:
    """Succeed, saying which step and attempt it was."""
    return {"step": ctx.step, "attempt": ctx.attempt}


@saga_task("rt.undo")
def undo(ctx: StepContext) -> dict[str, Any]:
    """Undo a step: succeed."""
    return {"undone": ctx.step}


@saga_task("rt.flaky")
def flaky(ctx: StepContext, failures: int) -> dict[str, Any]:
    """Fail transiently on the first ``failures`` attempts, then succeed."""
    if ctx.attempt <= failures:
        raise Flaky(f"{ctx.step} attempt {ctx.attempt} failed on purpose")
    return {"step": ctx.step, "attempt": ctx.attempt}


@saga_task("rt.refuse")
def refuse(ctx: StepContext) -> dict[str, Any]:
    """Fail for good at once."""
    raise Refused(f"{ctx.step} refused on purpose")


@saga_task("rt.undo_flaky")
def undo_flaky(ctx: StepContext) -> dict[str, Any]:
    """A compensation that always fails transiently (its policy decides when to give up)."""
    raise Flaky(f"compensation of {ctx.step} attempt {ctx.attempt} failed on purpose")


@saga_task("rt.backup")
def backup(ctx: StepContext) -> dict[str, Any]:
    """A fallback: the same end another way."""
    return {"via": "backup"}


@saga_task("rt.undo_backup")
def undo_backup(ctx: StepContext) -> dict[str, Any]:
    """Undo what the fallback did."""
    return {"undone": ctx.step, "via": "backup"}


@saga_task("rt.echo")
def echo(ctx: StepContext, value: Any) -> dict[str, Any]:
    """Return what it was given (a step reading an earlier result)."""
    return {"echo": value}


# -- the transport ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    """A message on the fake broker: an envelope, its task id, and the chain after it."""

    envelope: Envelope
    task_id: str
    chain: tuple[Envelope, ...] = ()
    """The actions the chain sends after this one, in order, each once the one before
    returned normally."""

    @property
    def name(self) -> str:
        """``step:role``, as tests name messages (``pay:fallback``, ``b1:compensation``)."""
        return f"{self.envelope.step}:{self.envelope.role.value}"


def _task_id(saga: Saga, envelope: Envelope) -> str:
    return envelope.task_id(saga.step(envelope.step).fallback is not None)


class RecordingTransport:
    """A :class:`~sagaline.runtime.Transport` that queues messages in memory and records all.

    ``queue`` holds the messages not delivered yet, oldest first; ``sent`` every envelope
    the runtime sent (a chain's first step only: the rest follow as the chain goes on);
    ``revoked`` every task id the runtime took back.
    """

    def __init__(self) -> None:
        """Start with nothing queued."""
        self.queue: list[Message] = []
        self.sent: list[Envelope] = []
        self.revoked: list[str] = []
        self.delayed: list[tuple[str, float]] = []
        """``(step:role, countdown)`` of every message sent with a countdown (queued at
        once all the same: a test delivers it when it likes)."""

    def send_chain(self, saga: Saga, saga_id: str, steps: Sequence[str],
                   headers: Mapping[str, str], *, countdown: float | None = None) -> None:
        """Queue the chain's first action; the others follow as it goes on."""
        envelopes = [Envelope(saga_id, saga.name, s, Role.ACTION) for s in steps]
        if countdown is not None:
            self.delayed.append((f"{steps[0]}:action", countdown))
        self.sent.append(envelopes[0])
        self.queue.append(Message(envelopes[0], _task_id(saga, envelopes[0]),
                                  tuple(envelopes[1:])))

    def send(self, saga: Saga, saga_id: str, steps: Sequence[str], role: Role, *,
             headers: Mapping[str, str], undoes_fallback: bool = False,
             countdown: float | None = None) -> None:
        """Queue one message per step, each on its own (a countdown is not waited for)."""
        for step in steps:
            envelope = Envelope(saga_id, saga.name, step, role, undoes_fallback)
            if countdown is not None:
                self.delayed.append((f"{step}:{role.value}", countdown))
            self.sent.append(envelope)
            self.queue.append(Message(envelope, _task_id(saga, envelope)))

    def revoke(self, task_ids: Sequence[str]) -> None:
        """Record the ids; their messages are dropped when they come."""
        self.revoked.extend(task_ids)

    def sent_as(self, role: Role) -> list[str]:
        """The steps of the messages sent for ``role``, in the order they were sent."""
        return [e.step for e in self.sent if e.role is role]

    def queued(self) -> list[str]:
        """The queued messages, as ``step:role``, oldest first."""
        return [m.name for m in self.queue]


# -- the engine's parts, in-process ----------------------------------------------------------


@dataclass(frozen=True)
class Delivered:
    """What one delivery came to, as the worker would see it."""

    message: Message
    outcome: Literal["returned", "retry", "skip", "failed", "revoked"]
    """``returned`` (the chain goes on), ``retry`` (sent again), ``skip`` (dropped),
    ``failed`` (the errback ran) or ``revoked`` (dropped unrun)."""
    value: Any = None
    """What the runtime returned, when it returned."""
    delay_s: float | None = None
    """The retry's delay, when it asked for one."""
    error: BaseException | None = None
    """What the final failure raised, when it failed."""


@dataclass
class InProcess:
    """The engine's runtime wired as :class:`~sagaline.Sagaline` wires it, on a fake transport.

    Every saga it starts is recorded under its own key ``prefix`` on ``client``, so tests
    sharing one Redis never see each other's runs.
    """

    client: redis.Redis
    prefix: str
    calls: list[str] = field(default_factory=list)
    """Every call of an operation's function, as ``step:role``, in order."""
    during: dict[str, Callable[[], None]] = field(default_factory=dict)
    """What to do while an operation runs, by ``step:role``, once (say, cancel the saga)."""

    def __post_init__(self) -> None:
        """Wire the store, driver, nested sagas, runtime and supervisor to the transport."""
        self.store = RedisStore(self.client, prefix=self.prefix)
        self.registry = SagaRegistry()
        self.tasks: dict[str, SagaTask] = {}
        self.transport = RecordingTransport()
        self.outbox = Outbox(self.store, None)
        self.driver = Driver(self.store, self.registry, self.tasks, self.transport, self.outbox)
        self.nested = NestedSagas(self.store, self.driver)
        self.runtime = Runtime(self.store, self.driver, self.nested, self.outbox,
                               lease_s=30, check_event=lambda name, payload: [])
        self.supervisor = Supervisor(self.store, self.driver, self.nested, self.outbox,
                                     max_recoveries=5)

    # -- starting ------------------------------------------------------------------------

    def start(self, saga: Saga, inputs: Mapping[str, Any] | None = None) -> str:
        """Register the saga (once), record a run of it and send its first messages."""
        if saga.name not in self.registry:
            self.registry.add(saga)
            for step in saga.steps:
                for task in step.tasks():
                    self.tasks[task.name] = task
        saga_id = new_id()
        assert self.driver.launch(saga, saga_id, saga.validate_inputs(inputs or {}), new_id(),
                                  new_id(), None).created
        return saga_id

    # -- delivering ----------------------------------------------------------------------

    def take(self, name: str) -> Message:
        """Take the queued message ``step:role`` (the oldest of that name) off the queue."""
        for message in self.transport.queue:
            if message.name == name:
                self.transport.queue.remove(message)
                return message
        raise AssertionError(f"no message {name!r} is queued; queued: {self.transport.queued()}")

    def deliver(self, name: str) -> Delivered:
        """Deliver the queued message ``step:role``."""
        return self.deliver_message(self.take(name))

    def deliver_next(self) -> Delivered:
        """Deliver the oldest queued message."""
        return self.deliver_message(self.transport.queue.pop(0))

    def run(self, limit: int = 100) -> list[Delivered]:
        """Deliver queued messages, oldest first, until none is left."""
        done: list[Delivered] = []
        while self.transport.queue:
            assert len(done) < limit, f"still messages after {limit}: {self.transport.queued()}"
            done.append(self.deliver_next())
        return done

    def deliver_message(self, message: Message, *, honour_revoke: bool = True) -> Delivered:
        """Deliver one message as a Celery worker would, and follow its outcome.

        A revoked message is dropped unless ``honour_revoke`` is false (the revoke came too
        late). Returned: the chain's next message is queued. :class:`RetryIn`: the same
        message is queued again. :class:`Skip`: it is dropped. Any other error: the errback
        runs.
        """
        envelope = message.envelope
        if honour_revoke and message.task_id in self.transport.revoked:
            return Delivered(message, "revoked")
        try:
            value = self.runtime.deliver(envelope, self._caller(envelope))
        except RetryIn as again:
            self.transport.queue.append(message)
            return Delivered(message, "retry", delay_s=again.delay_s)
        except Skip:
            return Delivered(message, "skip")
        except Exception as error:
            if envelope.role is Role.COMPENSATION:
                self.runtime.compensation_failed(envelope, error)
            else:
                self.runtime.step_failed(envelope, error)
            return Delivered(message, "failed", error=error)
        if message.chain:
            following = message.chain[0]
            saga = self.driver.definition_of(following.saga, following.saga_id)
            self.transport.queue.append(Message(following, _task_id(saga, following),
                                                message.chain[1:]))
        return Delivered(message, "returned", value=value)

    def _caller(self, envelope: Envelope) -> Callable[..., Any]:
        """What calls the operation's function: it notes the call, then runs it."""
        saga = self.driver.definition_of(envelope.saga, envelope.saga_id)
        task = saga.step(envelope.step).task_for(envelope.role, envelope.undoes_fallback)
        assert task is not None, f"{envelope} has no task"

        def call(ctx: StepContext, **arguments: Any) -> Any:
            key = f"{ctx.step}:{ctx.role.value}"
            self.calls.append(key)
            hook = self.during.pop(key, None)
            if hook is not None:
                hook()
            return task.fn(ctx, **arguments)

        return call

    # -- reading ---------------------------------------------------------------------------

    def load(self, saga_id: str) -> SagaRun:
        """The run as recorded."""
        return self.driver.load(saga_id)

    def undone(self, saga_id: str) -> list[str]:
        """The steps whose compensation completed, in the order they completed."""
        return [str(t.step) for t in self.load(saga_id).log
                if t.event == "compensation.completed"]

    def forget(self) -> None:
        """Delete every key of this wiring's prefix."""
        keys = list(self.client.scan_iter(match=f"{self.prefix}*", count=1000))
        if keys:
            self.client.delete(*keys)
