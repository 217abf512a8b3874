"""The Redis store: a saga's record, its steps' records and its transition log.

Every change is one Lua script, so it is atomic: no record is read, changed in Python and
written back whole, and two steps finishing at once never lose each other's writes.

Keys, under a prefix (``sagaline:`` by default):

- ``saga:{id}``: hash of the run (status, name, correlation id, inputs, result, error, ...)
- ``saga:{id}:steps``: hash of ``{role}:{step}:{field}`` (status, attempts, attempt_times,
  started_at, ended_at, lease_until, result, error), for actions and compensations
- ``saga:{id}:log``: list of transitions, JSON, in order
- ``index:all``, ``index:status:{status}``: sorted sets of ids by time;
  ``index:correlation:{id}``: set of saga ids of one business flow
- channel ``saga:{id}:done``: a message when the run reaches its final state
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, cast

import redis

from . import _json
from .errors import SagaNotFoundError, WaitTimeoutError
from .record import SagaRun, StepRun, operation, timestamp, transition
from .status import Role, SagaStatus

_SCRIPTS = ("create", "begin", "complete", "fail", "fail_saga", "abandon")


@dataclass(frozen=True)
class Claim:
    """The answer to :meth:`RedisStore.begin`: whether and how to run an attempt."""

    kind: str
    """``run``, ``completed``, ``busy``, ``inactive``, ``failed`` or ``missing``."""
    attempt: int = 0
    """The attempt to run (``run``)."""
    inputs: dict[str, Any] | None = None
    """The saga's inputs (``run``)."""
    correlation_id: str = ""
    """The saga's correlation id (``run``)."""
    fault: str = ""
    """An injected fault's message: this attempt must fail with it (``run``)."""
    results: dict[str, Any] | None = None
    """Results of the steps asked for (``run``)."""
    result: Any = None
    """The recorded result (``completed``)."""
    cursor: int = -1
    """The furthest step index begun (``completed``)."""
    wait_s: float = 0.0
    """Seconds the live lease has left (``busy``)."""
    saga_status: str = ""
    """The saga's status (``inactive``)."""


class RedisStore:
    """Saga state in Redis; safe to share between threads, and used after fork.

    Args:
        client: A redis-py client with ``decode_responses=True``.
        prefix: The key prefix; different prefixes keep several deployments apart.
        retention_s: How long a finished saga's records are kept, in seconds (0: forever).
    """

    def __init__(self, client: redis.Redis, *, prefix: str = "sagaline:", retention_s: int = 0):
        """Wrap a client; the Lua scripts are loaded on first use."""
        self.client = client
        self.prefix = prefix
        self.retention_s = retention_s
        self.honour_faults = False
        prelude = _lua("_prelude")
        self._scripts = {name: client.register_script(prelude + _lua(name)) for name in _SCRIPTS}

    @classmethod
    def from_url(cls, url: str, *, prefix: str = "sagaline:", retention_s: int = 0) -> RedisStore:
        """A store on the Redis at ``url`` (``redis://``, ``rediss://`` or ``unix://``)."""
        client = redis.Redis.from_url(url, decode_responses=True, health_check_interval=30)
        return cls(client, prefix=prefix, retention_s=retention_s)

    # -- keys -----------------------------------------------------------------------------

    def saga_keys(self, saga_id: str) -> list[str]:
        """The saga hash, step hash and log keys of one run."""
        base = f"{self.prefix}saga:{saga_id}"
        return [base, f"{base}:steps", f"{base}:log"]

    def done_channel(self, saga_id: str) -> str:
        """The pub/sub channel told when the run reaches its final state."""
        return f"{self.prefix}saga:{saga_id}:done"

    def _call(self, script: str, saga_id: str, *args: Any) -> Any:
        return self._scripts[script](
            keys=self.saga_keys(saga_id), args=[self.prefix, saga_id, *args]
        )

    # -- transitions ------------------------------------------------------------------------

    def create(
        self,
        saga_id: str,
        *,
        name: str,
        correlation_id: str,
        causation_id: str | None,
        inputs: dict[str, Any],
        plan: Sequence[str],
    ) -> bool:
        """Record a new run as running; ``False`` if the id is taken."""
        created = self._call(
            "create", saga_id, name, correlation_id, causation_id or "",
            _json.dumps(inputs), _json.dumps(list(plan)),
        )
        return bool(created)

    def begin(
        self, saga_id: str, role: Role, step: str, *, index: int, lease_s: float,
        needed: Sequence[str],
    ) -> Claim:
        """Claim the next attempt of a step's action or compensation (see ``begin.lua``)."""
        reply = self._call(
            "begin", saga_id, role.value, step, index, lease_s, _json.dumps(list(needed)),
            "1" if self.honour_faults else "0",
        )
        kind = reply[0]
        if kind == "run":
            results = {name: _json.loads(raw) for name, raw in zip(needed, reply[5:], strict=True)}
            return Claim(
                kind, attempt=int(reply[1]), inputs=_json.loads(reply[2]),
                correlation_id=reply[3], fault=reply[4], results=results,
            )
        if kind == "completed":
            return Claim(kind, result=_json.loads(reply[1]), cursor=int(reply[2]))
        if kind == "busy":
            return Claim(kind, wait_s=float(reply[1]))
        if kind == "inactive":
            return Claim(kind, saga_status=reply[1])
        return Claim(kind)

    def complete(
        self, saga_id: str, role: Role, step: str, *, attempt: int, result: Any,
        saga_result: Any = None, final: bool = False,
    ) -> str:
        """Record a successful attempt; with ``final`` also complete the saga."""
        return str(
            self._call(
                "complete", saga_id, role.value, step, attempt, _json.dumps(result),
                _json.dumps(saga_result) if final else "", self.retention_s,
            )
        )

    def fail(
        self, saga_id: str, role: Role, step: str, *, attempt: int, error: dict[str, Any],
        retry_in_s: float | None,
    ) -> str:
        """Record a failed attempt, to be retried in ``retry_in_s`` or (``None``) final.

        ``attempt=0`` fails whichever attempt is current (a worker lost it mid-run).
        """
        retry = "" if retry_in_s is None else f"{retry_in_s:.6f}"
        return str(
            self._call(
                "fail", saga_id, role.value, step, attempt, _json.dumps(error), retry,
                self.retention_s,
            )
        )

    def fail_saga(
        self, saga_id: str, *, failed_step: str, error: dict[str, Any],
        table: Sequence[tuple[str, bool]],
    ) -> list[str] | None:
        """Turn a running saga to compensating, once; the compensations to run, in order.

        Returns ``None`` when the saga was not running (another caller got there first).
        """
        reply = self._call(
            "fail_saga", saga_id, failed_step, _json.dumps(error),
            _json.dumps([list(row) for row in table]), self.retention_s,
        )
        if reply[0] != "compensate":
            return None
        plan = _json.loads(reply[1])
        return list(plan) if isinstance(plan, list) else []

    def abandon(self, saga_id: str, error: dict[str, Any]) -> bool:
        """End a running saga as failed, with nothing to undo."""
        return bool(self._call("abandon", saga_id, _json.dumps(error), self.retention_s))

    # -- injected faults ------------------------------------------------------------------

    def inject_fault(self, saga: str, step: str, role: Role = Role.ACTION, *,
                     times: int | None = None, message: str = "injected fault") -> None:
        """Make the next ``times`` attempts (``None``: every attempt) of an operation fail.

        Only workers whose store has ``honour_faults`` set obey; for tests and drills.
        """
        spec = {"times": -1 if times is None else times, "message": message}
        self.client.hset(f"{self.prefix}faults", f"{saga}:{role.value}:{step}", _json.dumps(spec))

    def clear_faults(self) -> None:
        """Remove every injected fault."""
        self.client.delete(f"{self.prefix}faults")

    # -- reading --------------------------------------------------------------------------

    def compensations_left(self, saga_id: str) -> list[str]:
        """The planned compensations not yet completed or failed, in plan order."""
        saga_key, steps_key, _ = self.saga_keys(saga_id)
        plan = _json.loads(cast(str | None, self.client.hget(saga_key, "compensation_plan")))
        plan = plan or []
        if not plan:
            return []
        statuses = self.client.hmget(steps_key, [f"compensation:{s}:status" for s in plan])
        final = ("completed", "failed")
        return [s for s, st in zip(plan, statuses, strict=True) if st not in final]

    def status(self, saga_id: str) -> SagaStatus | None:
        """The run's status, or ``None`` if it is not recorded."""
        raw = self.client.hget(self.saga_keys(saga_id)[0], "status")
        return SagaStatus(raw) if raw else None

    def load(
        self, saga_id: str, *,
        task_names: Callable[[str], dict[str, tuple[str, str | None]]] | None = None,
    ) -> SagaRun:
        """Read a whole run.

        Args:
            saga_id: The run.
            task_names: Given the saga's name, per step the action's and compensation's
                task names, if known.

        Raises:
            SagaNotFoundError: No such run is recorded.
        """
        saga_key, steps_key, log_key = self.saga_keys(saga_id)
        with self.client.pipeline(transaction=True) as pipe:
            pipe.hgetall(saga_key)
            pipe.hgetall(steps_key)
            pipe.lrange(log_key, 0, -1)
            saga, fields, log = pipe.execute()
        if not saga:
            raise SagaNotFoundError(f"no saga {saga_id!r} is recorded (it may have expired)")
        names = task_names(saga["name"]) if task_names else {}
        steps = []
        for name in _json.loads(saga.get("plan")) or []:
            action_task, undo_task = names.get(name, (None, None))
            action = operation(fields, f"action:{name}:", action_task)
            undo = None
            if f"compensation:{name}:status" in fields or undo_task is not None:
                undo = operation(fields, f"compensation:{name}:", undo_task)
            steps.append(StepRun(name=name, compensation=undo, **action.model_dump()))
        transitions = [transition(raw) for raw in log]
        compensations = [
            (names.get(t.step, (None, None))[1] or str(t.step)).rsplit(".", 1)[-1]
            for t in transitions if t.event == "compensation.completed" and t.step
        ]
        undone = [s.name for s in steps if s.compensation and s.compensation.status == "failed"]
        error = _json.loads(saga.get("error"))
        return SagaRun(
            saga_id=saga_id,
            name=saga["name"],
            status=SagaStatus(saga["status"]),
            correlation_id=saga.get("correlation_id", ""),
            causation_id=saga.get("causation_id") or None,
            inputs=_json.loads(saga.get("inputs")) or {},
            result=_json.loads(saga.get("result")),
            error=error or None,
            failed_step=saga.get("failed_step") or None,
            steps=steps,
            compensations=compensations,
            undone=undone,
            created_at=timestamp(saga["created_at"]),
            ended_at=timestamp(saga.get("ended_at")),
            log=transitions,
        )

    def list_ids(self, status: SagaStatus | None = None, *, limit: int = 50) -> list[str]:
        """Ids of the newest runs (of one status), newest first; expired ones pruned."""
        index = f"{self.prefix}index:" + (f"status:{status.value}" if status else "all")
        ids = cast(list[str], self.client.zrevrange(index, 0, limit * 2 - 1))
        if not ids:
            return []
        with self.client.pipeline(transaction=False) as pipe:
            for saga_id in ids:
                pipe.exists(self.saga_keys(saga_id)[0])
            alive = pipe.execute()
        gone = [i for i, ok in zip(ids, alive, strict=True) if not ok]
        if gone:
            self.client.zrem(index, *gone)
        return [i for i, ok in zip(ids, alive, strict=True) if ok][:limit]

    def ids_for_correlation(self, correlation_id: str) -> list[str]:
        """Ids of every recorded run of one business flow."""
        members = cast(
            set[str], self.client.smembers(f"{self.prefix}index:correlation:{correlation_id}")
        )
        return sorted(members)

    def wait(self, saga_id: str, timeout: float) -> SagaStatus:
        """Block until the run is final; return its status.

        Raises:
            WaitTimeoutError: It was not final within ``timeout`` seconds.
            SagaNotFoundError: No such run is recorded.
        """
        deadline = time.monotonic() + timeout
        pubsub = self.client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
        try:
            pubsub.subscribe(self.done_channel(saga_id))
            while True:
                status = self.status(saga_id)
                if status is None:
                    raise SagaNotFoundError(f"no saga {saga_id!r} is recorded")
                if status.is_final:
                    return status
                left = deadline - time.monotonic()
                if left <= 0:
                    raise WaitTimeoutError(
                        f"saga {saga_id} is still {status.value} after {timeout:.1f} s"
                    )
                pubsub.get_message(timeout=min(left, 1.0))
        finally:
            pubsub.close()


def _lua(name: str) -> str:
    return resources.files("sagaline").joinpath("lua", f"{name}.lua").read_text()
