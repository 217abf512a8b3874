"""Reading a saga's records and the store's indexes (plain reads, no Lua).

:class:`~sagaline.store.RedisStore` builds on this; every change goes through its scripts
(the pruning of expired ids from the indexes too: ``indexes.lua``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, cast

import redis

from sagaline import codec
from sagaline.errors import SagaNotFoundError, WaitTimeoutError
from sagaline.outcome import DeadLetter, SagaRun, TaskNames, build_run
from sagaline.status import Role, SagaStatus

_FINAL_OPERATION = ("completed", "failed", "skipped")


class SagaRecords:
    """Reads of the saga records under one key prefix (the base of the store)."""

    client: redis.Redis
    """A redis-py client with ``decode_responses=True``."""
    prefix: str
    """The key prefix."""
    retention_s: int
    """How long a finished saga's records are kept, in seconds (0: forever)."""
    _housekeep: Callable[..., Any]
    """Runs one of the store's writes outside any one saga (``indexes.lua``)."""

    # -- keys -----------------------------------------------------------------------------

    def saga_keys(self, saga_id: str) -> list[str]:
        """The saga hash, step hash and log keys of one run."""
        base = f"{self.prefix}saga:{saga_id}"
        return [base, f"{base}:steps", f"{base}:log"]

    def done_channel(self, saga_id: str) -> str:
        """The pub/sub channel told when the run reaches its final state."""
        return f"{self.prefix}saga:{saga_id}:done"

    # -- what the recovery sweep reads ------------------------------------------------------

    def due(self, limit: int = 100) -> list[str]:
        """Unfinished sagas the sweep should look at now, the longest overdue first."""
        now = self.client.time()
        ids = self.client.zrangebyscore(f"{self.prefix}index:active", "-inf",
                                        now[0] + now[1] / 1e6, start=0, num=limit)
        return cast(list[str], ids)

    def past_deadline(self, limit: int = 100) -> list[str]:
        """Unfinished sagas past their deadline."""
        now = self.client.time()
        ids = self.client.zrangebyscore(f"{self.prefix}index:deadline", "-inf",
                                        now[0] + now[1] / 1e6, start=0, num=limit)
        return cast(list[str], ids)

    def prune_indexes(self) -> int:
        """Drop index entries of sagas older than the retention time; how many went."""
        if self.retention_s <= 0:
            return 0
        # A saga waiting for an operator stays listed however old it is.
        final = [s.value for s in SagaStatus
                 if s.is_final and s is not SagaStatus.NEEDS_ATTENTION]
        return int(self._housekeep("prune", self.retention_s, *final))

    def active_ids(self) -> list[str]:
        """Every unfinished saga (running or compensating)."""
        return cast(list[str], self.client.zrange(f"{self.prefix}index:active", 0, -1))

    def dead_letters(self) -> list[DeadLetter]:
        """Compensations that gave up, oldest first."""
        raw = cast(dict[str, str], self.client.hgetall(f"{self.prefix}dead_letters"))
        letters = [DeadLetter.model_validate(codec.loads(v)) for v in raw.values()]
        return sorted(letters, key=lambda d: d.at)

    # -- the event outbox's index ---------------------------------------------------------

    def outbox_due(self, limit: int = 100, older_than_s: float = 0.0) -> list[str]:
        """Sagas with log entries not yet published, written ``older_than_s`` ago or more."""
        now = self.client.time()
        ids = self.client.zrangebyscore(f"{self.prefix}index:outbox", "-inf",
                                        now[0] + now[1] / 1e6 - older_than_s, start=0, num=limit)
        return cast(list[str], ids)

    def read_outbox(self, saga_id: str) -> tuple[dict[str, str], list[str], int]:
        """A saga's hash, its whole log, and how many log entries were published."""
        saga_key, _, log_key = self.saga_keys(saga_id)
        with self.client.pipeline(transaction=True) as pipe:
            pipe.hgetall(saga_key)
            pipe.lrange(log_key, 0, -1)
            saga, entries = pipe.execute()
        return saga, entries, int(saga.get("events_published") or 0)

    # -- reading --------------------------------------------------------------------------

    def compensations_left(self, saga_id: str) -> tuple[list[str], bool]:
        """The planned compensations still to run, in plan order.

        The flag says whether the first must wait for an action still in flight (then
        nothing may start yet).
        """
        saga_key, steps_key, _ = self.saga_keys(saga_id)
        plan = codec.loads(cast(str | None, self.client.hget(saga_key, "compensation_plan")))
        if not plan:
            return [], False
        statuses = self.client.hmget(steps_key, [f"compensation:{s}:status" for s in plan])
        left = [(s, st) for s, st in zip(plan, statuses, strict=True)
                if st not in _FINAL_OPERATION]
        return [s for s, _ in left], any(st == "awaiting" for _, st in left)

    def results(self, saga_id: str, steps: Sequence[str]) -> dict[str, Any]:
        """The recorded results of ``steps`` (a fallback's, when it ran instead)."""
        fields = [f"{role}:{s}:result" for s in steps for role in ("action", "fallback")]
        raw = cast(list[str | None],
                   self.client.hmget(self.saga_keys(saga_id)[1], fields) if fields else [])
        return {s: codec.loads(raw[2 * i] or raw[2 * i + 1]) for i, s in enumerate(steps)}

    def inputs(self, saga_id: str) -> dict[str, Any]:
        """The run's recorded inputs."""
        raw = self.client.hget(self.saga_keys(saga_id)[0], "inputs")
        return cast(dict[str, Any], codec.loads(cast(str | None, raw)) or {})

    def correlation_of(self, saga_id: str) -> tuple[str, str]:
        """The run's correlation id and W3C ``traceparent`` ('' when not recorded)."""
        cid, traceparent = self.client.hmget(self.saga_keys(saga_id)[0],
                                             ["correlation_id", "traceparent"])
        return str(cid or ""), str(traceparent or "")

    def record(self, saga_id: str) -> dict[str, str]:
        """The run's own fields as stored (status, name, parent_id, result, error, ...).

        Empty when no such run is recorded.
        """
        return cast(dict[str, str], self.client.hgetall(self.saga_keys(saga_id)[0]))

    def operation_status(self, saga_id: str, role: str, step: str) -> str | None:
        """The status of one operation (``action``, ``fallback`` or ``compensation``)."""
        raw = self.client.hget(self.saga_keys(saga_id)[1], f"{role}:{step}:status")
        return cast(str | None, raw)

    def name_of(self, saga_id: str) -> str | None:
        """The name of the saga a run follows, or ``None`` if it is not recorded."""
        return cast(str | None, self.client.hget(self.saga_keys(saga_id)[0], "name"))

    def definition_json(self, saga_id: str) -> str | None:
        """The JSON of the definition recorded with a run assembled at runtime, if any."""
        raw = self.client.hget(self.saga_keys(saga_id)[0], "definition")
        return cast(str | None, raw) or None

    def cursor(self, saga_id: str) -> int:
        """The position of the last forward step the run completed (-1: none)."""
        return int(self.client.hget(self.saga_keys(saga_id)[0], "cursor") or -1)

    def attention_at(self, saga_id: str) -> float | None:
        """When the recovery sweep looks at an unfinished run next (epoch seconds)."""
        due = self.client.zscore(f"{self.prefix}index:active", saga_id)
        return None if due is None else float(due)

    def transitions(self, saga_id: str, start: int = 0) -> list[dict[str, Any]]:
        """The run's transition log from entry ``start`` on, each entry decoded."""
        raw = cast(list[str], self.client.lrange(self.saga_keys(saga_id)[2], start, -1))
        return [codec.loads(entry) for entry in raw]

    def status(self, saga_id: str) -> SagaStatus | None:
        """The run's status, or ``None`` if it is not recorded."""
        raw = self.client.hget(self.saga_keys(saga_id)[0], "status")
        return SagaStatus(raw) if raw else None

    def is_cancel_requested(self, saga_id: str) -> bool:
        """Whether the saga was cancelled (or passed its deadline)."""
        return self.client.hget(self.saga_keys(saga_id)[0], "cancel_requested") == "1"

    def must_stop(self, saga_id: str, role: Role) -> bool:
        """Whether a running operation of ``role`` should stop now.

        Any operation stops when the saga was cancelled (or passed its deadline); an action
        or fallback also when the saga no longer goes forward (it is rolling back because
        another step failed, or it ended): whatever it would finish is undone anyway.
        """
        status, cancelled = self.client.hmget(self.saga_keys(saga_id)[0],
                                              ["status", "cancel_requested"])
        if cancelled == "1":
            return True
        return role is not Role.COMPENSATION and status not in (None, "running")

    def load(self, saga_id: str, *, task_names: Callable[[str], TaskNames] | None = None
             ) -> SagaRun:
        """Read a whole run; ``task_names`` maps a saga name to its steps' task names.

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
        return build_run(saga_id, saga, fields, log, names)

    def list_ids(self, status: SagaStatus | None = None, *, limit: int = 50) -> list[str]:
        """Ids of the newest runs (of one status), newest first; expired ones pruned."""
        index = self._index(status)
        ids = cast(list[str], self.client.zrevrange(index, 0, limit * 2 - 1))
        return self._alive(index, ids)[:limit]

    def page_ids(self, status: SagaStatus | None = None, *, limit: int,
                 before: tuple[float, str] | None = None) -> list[tuple[str, float]]:
        """Up to ``limit`` ids with their index scores, newest first, after ``before``.

        The order is the index's in reverse (of every saga, score: creation time; or of
        one status, score: time of the move to it): score descending, equal scores by id
        descending. ``before`` is a ``(score, id)`` taken from an earlier answer; only
        entries strictly after it in that order come, whether or not it is still indexed,
        so walking with the last entry of each answer shows every entry that stays indexed
        exactly once. Expired ids are pruned and skipped; fewer than ``limit`` come only
        when the index has no more.
        """
        index = self._index(status)
        page: list[tuple[str, float]] = []
        while len(page) < limit:
            want = limit - len(page)
            entries, exhausted = self._entries_after(index, before, want + max(10, want // 4))
            if entries:
                alive = set(self._alive(index, [saga_id for saga_id, _ in entries]))
                page += [e for e in entries if e[0] in alive][:want]
                before = (entries[-1][1], entries[-1][0])
            if exhausted:
                break
        return page

    def names_of(self, ids: Sequence[str]) -> list[str | None]:
        """The saga name of each run in ``ids``, in order (``None``: not recorded)."""
        if not ids:
            return []
        with self.client.pipeline(transaction=False) as pipe:
            for saga_id in ids:
                pipe.hget(self.saga_keys(saga_id)[0], "name")
            return cast(list[str | None], pipe.execute())

    def _index(self, status: SagaStatus | None) -> str:
        """The key of the index of every saga, or of those in ``status``."""
        return f"{self.prefix}index:" + (f"status:{status.value}" if status else "all")

    def _alive(self, index: str, ids: list[str]) -> list[str]:
        """The ids of ``ids`` whose records are kept, in order; the others leave ``index``."""
        if not ids:
            return []
        with self.client.pipeline(transaction=False) as pipe:
            for saga_id in ids:
                pipe.exists(self.saga_keys(saga_id)[0])
            alive = pipe.execute()
        gone = [i for i, ok in zip(ids, alive, strict=True) if not ok]
        if gone:
            self._housekeep("forget", index.removeprefix(f"{self.prefix}index:"), *gone)
        return [i for i, ok in zip(ids, alive, strict=True) if ok]

    def _entries_after(self, index: str, before: tuple[float, str] | None, count: int
                       ) -> tuple[list[tuple[str, float]], bool]:
        """Up to ``count`` entries of ``index`` after ``before``; whether no more follow.

        "After" is in reverse order, strictly (see :meth:`page_ids`). Read with an inclusive
        top score, so the entries tied with ``before`` at or above its id come first: they
        are dropped, reading on past them if they fill a window.
        """
        top: float | str = "+inf" if before is None else before[0]
        offset = 0
        while True:
            raw = cast(list[tuple[str, float]], self.client.zrevrangebyscore(
                index, top, "-inf", start=offset, num=count, withscores=True))
            kept = raw if before is None else [e for e in raw if _is_after(e, before)]
            if kept or len(raw) < count:
                return kept, len(raw) < count
            offset += len(raw)

    def ids_for_correlation(self, correlation_id: str) -> list[str]:
        """Ids of every recorded run of one business flow."""
        key = f"{self.prefix}index:correlation:{correlation_id}"
        return sorted(cast(set[str], self.client.smembers(key)))

    def wait(self, saga_id: str, timeout: float) -> SagaStatus:
        """Block until the run is final; return its status.

        Raises:
            WaitTimeoutError: It was not final within ``timeout`` seconds.
            SagaNotFoundError: No such run is recorded.
        """
        deadline = time.monotonic() + timeout
        status = self.status(saga_id)
        if status is not None and status.is_final:
            return status
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


def _is_after(entry: tuple[str, float], before: tuple[float, str]) -> bool:
    """Whether an index entry ``(id, score)`` comes after ``before`` in reverse order."""
    saga_id, score = entry
    return score < before[0] or (score == before[0] and saga_id < before[1])
