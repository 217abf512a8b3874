"""Small reusable saga tasks for the engine's own tests: each does one thing and tells."""

from __future__ import annotations

import logging
import os
import signal
import time
from typing import Any

import redis

from sagaline import (
    Const,
    FromInput,
    NonRetryableError,
    Step,
    StepContext,
    add_steps,
    saga_task,
)

log = logging.getLogger("tests.support.steps")


def _redis() -> redis.Redis:
    from config import settings
    from config.celery import redis_url

    return redis.Redis.from_url(redis_url(settings), decode_responses=True)


def calls_key(tag: str) -> str:
    """The Redis list where operations of a test tagged ``tag`` note each call."""
    return f"sagaline-test:calls:{tag}"


def note(tag: str, what: str) -> None:
    """Append ``what`` to the calls of ``tag`` (how tests see what ran, how often, in order)."""
    _redis().rpush(calls_key(tag), what)


def gate_key(tag: str) -> str:
    """The Redis key a test sets to let the held operations of its sagas (``held_undo``) end."""
    return f"sagaline-test:gate:{tag}"


class Boom(NonRetryableError):
    """A business failure that must not be retried."""


class Flaky(Exception):
    """A transient failure that may be retried."""


@saga_task("testing.succeed")
def succeed(ctx: StepContext, tag: str) -> dict[str, Any]:
    """Note the call and succeed."""
    note(tag, f"{ctx.step}:{ctx.role.value}")
    return {"step": ctx.step, "attempt": ctx.attempt, "pid": os.getpid()}


@saga_task("testing.undo")
def undo(ctx: StepContext, tag: str) -> dict[str, Any]:
    """Note the compensation and succeed."""
    note(tag, f"{ctx.step}:{ctx.role.value}")
    return {"undone": ctx.step}


@saga_task("testing.fail")
def fail(ctx: StepContext, tag: str) -> dict[str, Any]:
    """Note the call and fail for good."""
    note(tag, f"{ctx.step}:{ctx.role.value}")
    raise Boom(f"{ctx.step} failed on purpose", step=ctx.step)


@saga_task("testing.fail_undo")
def fail_undo(ctx: StepContext, tag: str) -> dict[str, Any]:
    """Note the compensation attempt and fail (retryably, so its policy retries it)."""
    note(tag, f"{ctx.step}:{ctx.role.value}:{ctx.attempt}")
    raise Flaky(f"compensation of {ctx.step} failed on purpose")


@saga_task("testing.sleep")
def sleep(ctx: StepContext, tag: str, seconds: float) -> dict[str, Any]:
    """Note the call, sleep, note the end and succeed."""
    note(tag, f"{ctx.step}:start")
    time.sleep(seconds)
    note(tag, f"{ctx.step}:end")
    return {"slept": seconds}


@saga_task("testing.work")
def work(ctx: StepContext, tag: str, seconds: float) -> dict[str, Any]:
    """Work for ``seconds`` in small units, stopping early when the saga is cancelled."""
    note(tag, f"{ctx.step}:start")
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        ctx.raise_if_cancelled()
        time.sleep(0.05)
    note(tag, f"{ctx.step}:end")
    return {"worked": seconds}


@saga_task("testing.slow_undo")
def slow_undo(ctx: StepContext, tag: str, seconds: float) -> dict[str, Any]:
    """A compensation that takes ``seconds``, noting its start and end."""
    note(tag, f"{ctx.step}:undo:start")
    time.sleep(seconds)
    note(tag, f"{ctx.step}:undo:end")
    return {"undone": ctx.step}


@saga_task("testing.echo")
def echo(ctx: StepContext, tag: str, value: Any) -> dict[str, Any]:
    """Note the call and return what it was given (a later step reading a result)."""
    note(tag, f"{ctx.step}:{ctx.role.value}")
    return {"echo": value}


@saga_task("testing.backup")
def backup(ctx: StepContext, tag: str) -> dict[str, Any]:
    """A fallback: note the call and succeed another way."""
    note(tag, f"{ctx.step}:fallback")
    return {"via": "backup", "key": ctx.idempotency_key}


@saga_task("testing.undo_backup")
def undo_backup(ctx: StepContext, tag: str) -> dict[str, Any]:
    """The fallback's own compensation: note it, and what it undoes."""
    note(tag, f"{ctx.step}:undo_backup")
    return {"undone": ctx.action_key}


@saga_task("testing.plan_steps")
def plan_steps(ctx: StepContext, tag: str, seconds: float) -> dict[str, Any]:
    """Note the call and add two steps after this one: a quick one, then a slow one."""
    note(tag, f"{ctx.step}:{ctx.role.value}")
    return add_steps(
        {"planned": 2},
        Step("dyn_1", succeed, compensation=undo, args={"tag": FromInput("tag")}),
        Step("dyn_2", sleep, compensation=undo,
             args={"tag": FromInput("tag"), "seconds": Const(seconds)},
             compensation_args={"tag": FromInput("tag")}),
    )


@saga_task("testing.outgoing_headers")
def outgoing_headers(ctx: StepContext, tag: str) -> dict[str, str]:
    """Return the headers an outside call made from this step would carry."""
    return ctx.outgoing_headers()


@saga_task("testing.chatty")
def chatty(ctx: StepContext, tag: str) -> dict[str, Any]:
    """Log a line that names no saga (the worker's log filter adds the ids) and succeed,
    returning its input (which must never reach a log).
    """
    note(tag, f"{ctx.step}:{ctx.role.value}")
    log.warning("chatty step says hello")
    return {"step": ctx.step, "echo": tag}


@saga_task("testing.held_undo")
def held_undo(ctx: StepContext, tag: str, seconds: float) -> dict[str, Any]:
    """A compensation that notes its start, then holds until the test opens the gate of
    ``tag`` (at most ``seconds``), and notes its end.
    """
    note(tag, f"{ctx.step}:undo:start")
    client = _redis()
    end = time.monotonic() + seconds
    while not client.exists(gate_key(tag)) and time.monotonic() < end:
        time.sleep(0.02)
    note(tag, f"{ctx.step}:undo:end")
    return {"undone": ctx.step}


@saga_task("testing.die")
def die(ctx: StepContext, tag: str, whole_worker: bool) -> dict[str, Any]:
    """A poison step: note the attempt, then SIGKILL the process running it (as a segfault
    or the OOM killer would), or with ``whole_worker`` its worker's whole process group (as
    a machine that goes down). It never returns.

    Only for workers the tests start (each in a process group of its own).
    """
    note(tag, f"{ctx.step}:{ctx.role.value}:{ctx.attempt}")
    if whole_worker:
        os.killpg(os.getpgid(0), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)
    raise AssertionError("unreachable: the process was killed")


@saga_task("testing.flaky")
def flaky(ctx: StepContext, tag: str, failures: int) -> dict[str, Any]:
    """Note the attempt; fail (retryably) on the first ``failures`` attempts, then succeed."""
    note(tag, f"{ctx.step}:{ctx.role.value}:{ctx.attempt}")
    if ctx.attempt <= failures:
        raise Flaky(f"{ctx.step} attempt {ctx.attempt} failed on purpose")
    return {"step": ctx.step, "attempt": ctx.attempt}


@saga_task("testing.progressing")
def progressing(ctx: StepContext, tag: str, units: int, seconds: float) -> dict[str, Any]:
    """Work ``units`` units, reporting ``ctx.progress(i, units, unit=i)`` after each.

    Each unit lasts ``seconds``, or less once the test opens the gate of ``tag``
    (``gate_key``): a test reads the progress while the step runs, then lets it finish.
    """
    note(tag, f"{ctx.step}:start")
    client = _redis()
    for unit in range(1, units + 1):
        ctx.progress(unit, units, unit=unit)
        end = time.monotonic() + seconds
        while not client.exists(gate_key(tag)) and time.monotonic() < end:
            time.sleep(0.02)
    note(tag, f"{ctx.step}:end")
    return {"units": units}
