"""A choreographed flow's record in Redis: its status, what completed and what was undone.

Participants share this record, they do not take orders from it: each reaction records
that it completed (with the payload it emitted), a reaction that gives up turns the flow to
compensating, each compensation records that it ended, and the last one concludes the flow.
Every change is one Lua script, so two participants finishing together never lose a write.

Keys, under the store's prefix: ``flow:{cid}`` (saga, status, failure, times),
``flow:{cid}:done`` (reaction → payload), ``flow:{cid}:undo`` (reaction → ``completed`` or
``failed``), and ``index:flows`` (flows by start time).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import redis

from sagaline import codec

FINAL_FLOW_STATUSES = frozenset({"completed", "compensated", "compensation_failed", "failed"})

_CONCLUDE = """
local function conclude_if_undone(now)
  if redis.call('HGET', KEYS[1], 'status') ~= 'compensating' then return end
  local done = redis.call('HKEYS', KEYS[2])
  local failed = false
  for _, name in ipairs(done) do
    local undo = redis.call('HGET', KEYS[3], name)
    if not undo then return end
    if undo == 'failed' then failed = true end
  end
  local final = 'compensated'
  if failed then final = 'compensation_failed' end
  redis.call('HSET', KEYS[1], 'status', final, 'ended_at', now)
end
local t = redis.call('TIME')
local now = string.format('%.6f', tonumber(t[1]) + tonumber(t[2]) / 1000000)
"""
_CREATE = _CONCLUDE + """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'saga', ARGV[1], 'status', 'running', 'inputs', ARGV[2],
           'started_at', now)
redis.call('ZADD', KEYS[4], now, ARGV[3])
return 1
"""
_DONE = _CONCLUDE + """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 'missing' end
redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2])
return status
"""
_FAIL = _CONCLUDE + """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 'missing' end
if status == 'running' then
  redis.call('HSET', KEYS[1], 'status', 'compensating', 'failure', ARGV[1], 'failed_by', ARGV[2])
end
conclude_if_undone(now)
return redis.call('HGET', KEYS[1], 'status')
"""
_UNDONE = _CONCLUDE + """
if not redis.call('HGET', KEYS[1], 'status') then return 'missing' end
redis.call('HSETNX', KEYS[3], ARGV[1], ARGV[2])
conclude_if_undone(now)
return redis.call('HGET', KEYS[1], 'status')
"""
_COMPLETE = _CONCLUDE + """
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then
  return redis.call('HGET', KEYS[1], 'status') or 'missing'
end
redis.call('HSET', KEYS[1], 'status', 'completed', 'ended_at', now)
return 'completed'
"""
_ABANDON = _CONCLUDE + """
redis.call('HSET', KEYS[1], 'status', 'failed', 'ended_at', now, 'error', ARGV[1])
return 1
"""


@dataclass(frozen=True)
class FlowRun:
    """A choreographed flow as recorded."""

    correlation_id: str
    """The flow's id (its correlation id)."""
    saga: str
    """The choreography's name."""
    status: str
    """``running``, ``completed``, ``compensating``, ``compensated``,
    ``compensation_failed`` or ``failed``."""
    completed: dict[str, Any]
    """Reactions that completed, with the payload they emitted."""
    undone: dict[str, str]
    """Reactions whose compensation ended: ``completed`` or ``failed``."""
    failure: str | None
    """The failure event that started the compensations, if any."""

    @property
    def is_final(self) -> bool:
        """Whether the flow will not change any more."""
        return self.status in FINAL_FLOW_STATUSES



class FlowStore:
    """Reads and changes choreographed flows' records (one Lua script per change)."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        """Work on ``client``'s keys under ``prefix``."""
        self.client = client
        self.prefix = prefix
        self._scripts: dict[str, Any] = {}

    def keys(self, cid: str) -> list[str]:
        """The flow's hash, done hash, undo hash, and the flows index."""
        base = f"{self.prefix}flow:{cid}"
        return [base, f"{base}:done", f"{base}:undo", f"{self.prefix}index:flows"]

    def _run(self, source: str, cid: str, *args: Any) -> Any:
        script = self._scripts.get(source)
        if script is None:
            script = self._scripts[source] = self.client.register_script(source)
        return script(keys=self.keys(cid), args=list(args))

    def create(self, cid: str, saga: str, inputs: dict[str, Any]) -> bool:
        """Record a new running flow; ``False`` when one with this id exists."""
        return bool(self._run(_CREATE, cid, saga, codec.dumps(inputs), cid))

    def abandon(self, cid: str, error: str) -> None:
        """End a flow that could not start (its first event was refused) as failed."""
        self._run(_ABANDON, cid, error)

    def completed(self, cid: str, reaction: str, payload: dict[str, Any]) -> str:
        """Record that a reaction completed; the flow's status (``running`` or later)."""
        return str(self._run(_DONE, cid, reaction, codec.dumps(payload)))

    def failed(self, cid: str, failure: str, reaction: str) -> str:
        """Turn a running flow to compensating after ``reaction`` gave up; its status."""
        return str(self._run(_FAIL, cid, failure, reaction))

    def undone(self, cid: str, reaction: str, outcome: str) -> str:
        """Record a compensation's end (``completed`` or ``failed``); the flow's status."""
        return str(self._run(_UNDONE, cid, reaction, outcome))

    def finish(self, cid: str) -> str:
        """Complete a running flow (its completing event arrived); its status."""
        return str(self._run(_COMPLETE, cid))

    def saga_of(self, cid: str) -> str | None:
        """The name of the choreography a flow belongs to, if it is recorded."""
        return cast(str | None, self.client.hget(self.keys(cid)[0], "saga"))

    def payload_of(self, cid: str, reaction: str) -> dict[str, Any] | None:
        """What a completed reaction emitted; ``None`` if it did not complete."""
        raw = cast(str | None, self.client.hget(self.keys(cid)[1], reaction))
        return None if raw is None else cast(dict[str, Any], codec.loads(raw))

    def was_undone(self, cid: str, reaction: str) -> bool:
        """Whether the reaction's compensation already ended for this flow."""
        return bool(self.client.hexists(self.keys(cid)[2], reaction))

    def get(self, cid: str) -> FlowRun | None:
        """The flow as recorded, or ``None``."""
        flow, done, undo, _ = self.keys(cid)
        record = cast(dict[str, str], self.client.hgetall(flow))
        if not record:
            return None
        completed = {k: codec.loads(v) for k, v in
                     cast(dict[str, str], self.client.hgetall(done)).items()}
        return FlowRun(cid, record["saga"], record["status"], completed,
                       cast(dict[str, str], self.client.hgetall(undo)), record.get("failure"))
