"""The Redis store: a saga's record, its steps' records and its transition log.

Every change is one Lua script (``lua/``; the writes outside any one saga, such as pruning
the indexes, in ``indexes.lua``), so it is atomic: no record is read, changed in Python and
written back whole, and two steps finishing at once never lose each other's writes. No
module outside this folder spells a key. Scripts retry through redis-py's ``Retry`` on
connection errors; they are safe to run twice (a second ``complete`` is a ``duplicate``, a
second claim a newer attempt).

Keys, under a prefix (``sagaline:`` by default):

- ``saga:{id}``: hash of the run (status, name, correlation id, inputs, result, error,
  waiting_on, cancel_requested, deadline_at, recoveries, compensation_plan, ...)
- ``saga:{id}:steps``: hash of ``{role}:{step}:{field}`` (status, attempts, attempt_times,
  started_at, ended_at, lease_until, result, error; ``via`` on a compensation that undoes
  a fallback), for actions, fallbacks and compensations
- ``saga:{id}:log``: list of transitions, JSON, in order
- ``index:all``, ``index:status:{status}``: sorted sets of ids by time;
  ``index:correlation:{id}``: set of saga ids of one business flow
- ``index:active``: sorted set of unfinished sagas by when the recovery sweep should look
  at them if nothing happens first; ``index:deadline``: by deadline
- ``dead_letters``: hash of compensations that gave up, ``{id}:{step}`` → JSON
- ``faults``: injected faults (tests and drills)
- ``children_done``: list of child sagas that ended, for their parents to go on
- channel ``saga:{id}:done``: a message when the run reaches its final state

Every script runs wrapped (``_WRAP``): it replies with its own answer and, when it moved the
saga's status, the moves; the store announces each move as a telemetry event
(:mod:`sagaline.telemetry`), so saga events fire exactly once, in whichever process made
the move, at no extra round trip.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from typing import Any, cast

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from sagaline import codec, telemetry
from sagaline.status import Role
from sagaline.store.records import SagaRecords
from sagaline.store.replies import (
    Claim,
    Creation,
    GroupSpec,
    OutboxClaim,
    Rollback,
    claim_from_reply,
    creation_from_reply,
)
from sagaline.store.signals import SignalRecords

_SCRIPTS = ("create", "begin", "renew", "complete", "fail", "fail_saga", "abort", "abandon",
            "recover", "awaited", "reopen", "group", "finish", "next_undo", "child",
            "undo_completed", "retry_forward", "published", "outbox_claim", "attention",
            "signal")
#: Around each script: run its body as a function, reply with ``moved(reply)`` (_prelude).
_WRAP = "local function body()\n{}\nend\nreturn moved(body())\n"
_MOVE_INFO = ("saga", "correlation_id", "traceparent", "trace_parent_id", "created_at", "at",
              "failed_step", "error", "intent", "cancel_requested", "plan")


class RedisStore(SagaRecords, SignalRecords):
    """Saga state in Redis; safe to share between threads, and used after fork.

    Args:
        client: A redis-py client with ``decode_responses=True``.
        prefix: The key prefix; different prefixes keep several deployments apart.
        retention_s: How long a finished saga's records are kept, in seconds (0: forever).
        handoff_s: How long the next message of a saga may take to start before the
            recovery sweep looks at it.
    """

    def __init__(self, client: redis.Redis, *, prefix: str = "sagaline:", retention_s: int = 0,
                 handoff_s: float = 120.0) -> None:
        """Wrap a client; the Lua scripts are loaded on first use."""
        self.client = client
        self.prefix = prefix
        self.retention_s = retention_s
        self.handoff_s = handoff_s
        self.honour_faults = False
        prelude = _lua("_prelude")
        self._scripts = {name: client.register_script(prelude + _WRAP.format(_lua(name)))
                         for name in _SCRIPTS}
        self._indexes = client.register_script(_lua("indexes"))

    @classmethod
    def from_url(cls, url: str, *, prefix: str = "sagaline:", retention_s: int = 0,
                 handoff_s: float = 120.0) -> RedisStore:
        """A store on the Redis at ``url`` that rides out a restart of up to a minute."""
        client = redis.Redis.from_url(
            url, decode_responses=True, health_check_interval=30, socket_timeout=15,
            socket_connect_timeout=5,
            retry=Retry(ExponentialBackoff(cap=2.0, base=0.05), retries=40),
            retry_on_error=[redis.ConnectionError, redis.TimeoutError],
        )
        return cls(client, prefix=prefix, retention_s=retention_s, handoff_s=handoff_s)

    # -- scripts ----------------------------------------------------------------------------

    def _call(self, script: str, saga_id: str, *args: Any) -> Any:
        reply = self._scripts[script](
            keys=self.saga_keys(saga_id),
            args=[self.prefix, saga_id, self.retention_s, self.handoff_s, *args],
        )
        if len(reply) > 1:
            telemetry.announce_moves(saga_id, reply[1],
                                     dict(zip(_MOVE_INFO, reply[2], strict=True)))
        return reply[0]

    def _rollback_reply(self, reply: list[str]) -> Rollback | None:
        if reply[0] != "compensate":
            return None
        plan = codec.loads(reply[1])
        return Rollback(list(plan) if isinstance(plan, list) else [],
                        len(reply) > 2 and reply[2] == "1")

    # -- forward and backward transitions ---------------------------------------------------

    def create(self, saga_id: str, *, name: str, correlation_id: str, causation_id: str | None,
               inputs: dict[str, Any], plan: Sequence[str], deadline_at: float | None = None,
               parent: tuple[str, str] | None = None, definition: str | None = None,
               trace: telemetry.TraceContext | None = None,
               idempotency_key: str | None = None) -> Creation:
        """Record a new run as running, unless its id or its idempotency key is taken.

        ``parent`` is ``(parent saga id, step)`` for a child saga; ``definition`` the JSON
        of a saga assembled at runtime; ``trace`` the saga's place in a distributed trace,
        recorded so that every process that works for the saga joins it. An
        ``idempotency_key`` is checked and taken in the same script as the run is recorded,
        so two starts with one key, at the same instant too, record one run; the key is
        kept while the run is and expires with it.
        """
        parent_id, parent_step = parent or ("", "")
        return creation_from_reply(self._call(
            "create", saga_id, name, correlation_id, causation_id or "", codec.dumps(inputs),
            codec.dumps(list(plan)), "" if deadline_at is None else f"{deadline_at:.6f}",
            parent_id, parent_step, definition or "",
            trace.traceparent if trace else "", trace.parent_id if trace else "",
            idempotency_key or "",
        ), saga_id)

    def wait_for_child(self, saga_id: str, role: Role, step: str, *, attempt: int,
                       child_id: str) -> bool:
        """The claimed attempt waits for its child saga, holding no lease.

        Returns ``False`` if the attempt lost its claim.
        """
        return bool(self._call("child", saga_id, "wait", role.value, step, attempt,
                               child_id) == "ok")

    def child_ended(self, saga_id: str, step: str, *, child_status: str, result: Any,
                    error: dict[str, Any]) -> str:
        """Deliver a child saga's end to its parent's step (see ``child.lua``)."""
        return str(self._call("child", saga_id, "done", step, child_status,
                              codec.dumps(result), codec.dumps(error)))

    def undo_completed(self, saga_id: str, *, table: Sequence[Sequence[str | bool]],
                       error: dict[str, Any]) -> Rollback | None:
        """Turn a completed saga to compensating, as its parent undoes it.

        Returns ``None`` if it was not completed.
        """
        return self._rollback_reply(self._call(
            "undo_completed", saga_id, codec.dumps([list(row) for row in table]),
            codec.dumps(error)))

    def retry_forward(self, saga_id: str) -> bool:
        """Set a ``needs_attention`` saga running again, its failed steps pending.

        Returns ``False`` when it was not ``needs_attention``.
        """
        return bool(self._call("retry_forward", saga_id)[0] == "ok")

    def look_later(self, saga_id: str) -> bool:
        """Have the recovery sweep look at an unfinished saga after the hand-off time.

        For a saga this engine cannot define: another engine may, and the sweep must not
        pick it up at every round. Returns ``False`` when the saga is not unfinished.
        """
        return bool(self._call("attention", saga_id, "later"))

    def look_now(self, saga_id: str) -> bool:
        """Have the next recovery sweep look at an unfinished saga; ``False`` if finished."""
        return bool(self._call("attention", saga_id, "now"))

    def forget_deadline(self, saga_id: str) -> bool:
        """Drop a saga that is no longer running from the deadline index."""
        return bool(self._call("attention", saga_id, "no_deadline"))

    def next_child_done(self) -> str | None:
        """Take the id of a child saga that ended, for its parent to go on; ``None``."""
        return cast(str | None, self._housekeep("next_child_done") or None)

    def begin(self, saga_id: str, role: Role, step: str, *, index: int, lease_s: float,
              needed: Sequence[str], max_attempts: int = 0) -> Claim:
        """Claim the next attempt of a step's action or compensation (see ``begin.lua``).

        ``max_attempts``: once that many attempts were made and the last was lost with its
        process, the claim answers ``lost`` instead of starting another (0: no limit).
        """
        reply = self._call("begin", saga_id, role.value, step, index, lease_s,
                           codec.dumps(list(needed)), "1" if self.honour_faults else "0",
                           max_attempts)
        return claim_from_reply(reply, needed, saga_id)

    def renew(self, saga_id: str, role: Role, step: str, *, attempt: int, lease_s: float
              ) -> tuple[bool, bool]:
        """Extend a running attempt's lease: ``(still held, saga cancel requested)``."""
        reply = self._call("renew", saga_id, role.value, step, attempt, lease_s)
        return reply[0] == "ok", reply[1] == "1"

    def record_progress(self, saga_id: str, role: Role, step: str, report: str) -> None:
        """Keep an operation's latest progress report (JSON): one write, no script.

        Only the latest report is kept; it expires with the saga's other records.
        """
        _, steps_key, _ = self.saga_keys(saga_id)
        self.client.hset(steps_key, f"{role.value}:{step}:progress", report)

    def complete(self, saga_id: str, role: Role, step: str, *, attempt: int, result: Any,
                 saga_result: Any = None, final: bool = False, next_step: str = "",
                 plan: Sequence[str] | None = None,
                 events: Sequence[dict[str, Any]] = ()) -> str:
        """Record a successful attempt; with ``final`` also complete the saga.

        ``next_step`` names the forward step the saga waits on next, if any; ``plan`` is
        the run's steps when this step added some. ``events`` are the events the operation
        emitted (``{"name", "payload", "source"}``): they are logged, and so published,
        only if this attempt is the one recorded.
        """
        return str(self._call(
            "complete", saga_id, role.value, step, attempt, codec.dumps(result),
            codec.dumps(saga_result) if final else "", next_step, "",
            "" if plan is None else codec.dumps(list(plan)),
            codec.dumps_events(events),
        ))

    def complete_branch(self, saga_id: str, role: Role, step: str, *, attempt: int,
                        result: Any, group: GroupSpec,
                        events: Sequence[dict[str, Any]] = ()) -> tuple[str, list[str]]:
        """Record a successful attempt of a group's branch.

        Returns ``(outcome, branches to start)``; the outcome is ``group_done`` when it was
        the last branch of its group to complete (exactly one branch gets it), else as
        :meth:`complete`.
        """
        reply = self._call("complete", saga_id, role.value, step, attempt, codec.dumps(result),
                           "", "", group.json(), "",
                           codec.dumps_events(events))
        return str(reply[0]), [str(x) for x in reply[1:]]

    def open_group(self, saga_id: str, group: GroupSpec, *, force: bool = False) -> list[str]:
        """Mark the branches a group may start now (up to its bound); return them.

        With ``force``, the branches in flight are returned too (to send them again).
        """
        reply = self._call("group", saga_id, group.json(), "1" if force else "0")
        return [str(x) for x in reply[1:]] if reply[0] == "ok" else []

    def finish(self, saga_id: str, result: Any) -> bool:
        """Complete a running saga with its result; ``False`` if it was not running."""
        return bool(self._call("finish", saga_id, codec.dumps(result)))

    def next_compensations(self, saga_id: str, *, force: bool = False
                           ) -> list[tuple[str, bool]]:
        """The compensations to enqueue now, as ``(step, undoes the fallback)``.

        They are those of the rollback's first stage with any left (a step, or a group's
        branches, undone in parallel); each is returned once, unless ``force``.
        """
        reply = [str(x) for x in self._call("next_undo", saga_id, "1" if force else "0")]
        return [(reply[i], reply[i + 1] == "fallback") for i in range(0, len(reply), 2)]

    def fail(self, saga_id: str, role: Role, step: str, *, attempt: int, error: dict[str, Any],
             retry_in_s: float | None, fallback: bool = False) -> str:
        """Record a failed attempt, to be retried in ``retry_in_s`` or (``None``) final.

        ``attempt=0`` fails whichever attempt is current (a worker lost it mid-run). With
        ``fallback``, an action that gives up makes the step's fallback due (``fallback``).
        """
        retry = "" if retry_in_s is None else f"{retry_in_s:.6f}"
        return str(self._call("fail", saga_id, role.value, step, attempt, codec.dumps(error),
                              retry, "1" if fallback else "0"))

    def fail_saga(self, saga_id: str, *, failed_step: str, error: dict[str, Any],
                  table: Sequence[Sequence[str | bool]]) -> Rollback | None:
        """Turn a running saga to compensating, once; the compensations to run, in order.

        ``table`` is :meth:`Saga.rollback_table`. Returns ``None`` when the saga was not
        running (another caller got there first), or when a pivot completed: then the saga
        is not rolled back but turns ``needs_attention``.
        """
        return self._rollback_reply(self._call(
            "fail_saga", saga_id, failed_step, codec.dumps(error),
            codec.dumps([list(row) for row in table]),
        ))

    def abort(self, saga_id: str, *, reason: str, error: dict[str, Any],
              table: Sequence[Sequence[str | bool]]) -> Rollback | None:
        """Stop a running saga (``reason``: ``cancelled`` or ``deadline``) and plan its undo.

        Returns ``None`` when the saga was not running, or is past a pivot (it cannot be
        rolled back, so it goes on).
        """
        return self._rollback_reply(self._call(
            "abort", saga_id, reason, codec.dumps(error),
            codec.dumps([list(row) for row in table]),
        ))

    def abandon(self, saga_id: str, error: dict[str, Any]) -> bool:
        """End a running saga as failed, with nothing to undo."""
        return bool(self._call("abandon", saga_id, codec.dumps(error)))

    def reopen(self, saga_id: str) -> Rollback | None:
        """Set a compensation_failed saga compensating again; the compensations to retry."""
        return self._rollback_reply(self._call("reopen", saga_id))

    # -- recovery ---------------------------------------------------------------------------

    def claim_recovery(self, saga_id: str, max_recoveries: int) -> list[str]:
        """Take one due saga for recovery (see ``recover.lua``)."""
        return [str(x) for x in self._call("recover", saga_id, max_recoveries)]

    def release_awaited(self, saga_id: str, step: str) -> bool:
        """Make the compensation of an awaited action, whose worker was lost, due."""
        return bool(self._call("awaited", saga_id, step))

    # -- the event outbox (the transition log) --------------------------------------------

    def claim_outboxes(self, saga_ids: Sequence[str], token: str, lock_ms: int
                       ) -> tuple[dict[str, OutboxClaim], list[str]]:
        """Lock sagas' outboxes for one relay and read them, in one round trip.

        See ``outbox_claim.lua``. Returns the claims, and the sagas whose outbox another
        relay holds (a saga that expired is in neither).
        """
        replies = self._pipelined("outbox_claim", [(i, (token, lock_ms)) for i in saga_ids])
        claims, busy = {}, []
        for saga_id, reply in zip(saga_ids, replies, strict=True):
            if reply[0] == "ok":
                saga = {"name": reply[2], "correlation_id": reply[3], "causation_id": reply[4]}
                claims[saga_id] = OutboxClaim(saga, [str(e) for e in reply[5:]], int(reply[1]))
            elif reply[0] == "busy":
                busy.append(saga_id)
        return claims, busy

    def mark_published(self, counts: dict[str, int], token: str = "") -> dict[str, int]:
        """Record how many log entries of each saga were published, in one round trip.

        Releases ``token``'s claims too. Returns how many entries each saga has left.
        """
        replies = self._pipelined("published", [(i, (n, token)) for i, n in counts.items()])
        return {saga_id: int(left) for saga_id, left in zip(counts, replies, strict=True)}

    def _pipelined(self, script: str, calls: Sequence[tuple[str, tuple[Any, ...]]]
                   ) -> list[Any]:
        """Run one script for many sagas in one round trip (scripts that move no status)."""
        if not calls:
            return []
        with self.client.pipeline(transaction=False) as pipe:
            for saga_id, args in calls:
                self._scripts[script](
                    keys=self.saga_keys(saga_id), client=pipe,
                    args=[self.prefix, saga_id, self.retention_s, self.handoff_s, *args])
            return [reply[0] for reply in pipe.execute()]

    # -- injected faults ------------------------------------------------------------------

    def inject_fault(self, saga: str, step: str, role: Role = Role.ACTION, *,
                     times: int | None = None, message: str = "injected fault") -> None:
        """Make the next ``times`` attempts (``None``: every attempt) of an operation fail.

        Only workers whose store has ``honour_faults`` set obey; for tests and drills.
        """
        spec = {"times": -1 if times is None else times, "message": message}
        self._housekeep("fault", f"{saga}:{role.value}:{step}", codec.dumps(spec))

    def clear_faults(self) -> None:
        """Remove every injected fault."""
        self._housekeep("clear_faults")

    def _housekeep(self, what: str, *args: Any) -> Any:
        """Run one request of ``indexes.lua``: the store's writes outside any one saga."""
        return self._indexes(args=[self.prefix, what, *args])


def _lua(name: str) -> str:
    return resources.files("sagaline.store").joinpath("lua", f"{name}.lua").read_text()
