-- The sweep takes one due saga: claim the look (so two sweepers never both drive it) and
-- count it. ARGV[5..]: max_recoveries.
-- Returns {'final'} (it ended: dropped from the index), {'not_due'} (another sweeper or
-- progress moved it), {'alive', seconds} (its running attempt still holds a live lease),
-- or {'recover', status, recoveries, exhausted ('1' when it was recovered too often without
-- progress)}.
local max_recoveries = tonumber(ARGV[5])
local status = redis.call('HGET', SAGA, 'status')
local now = now_s()
if status ~= 'running' and status ~= 'compensating' then
  redis.call('ZREM', ACTIVE, ID)
  return {'final'}
end
local due = tonumber(redis.call('ZSCORE', ACTIVE, ID) or '0')
if due > now then return {'not_due'} end
local waiting = redis.call('HGET', SAGA, 'waiting_on') or ''
if waiting ~= '' and redis.call('HGET', STEPS, waiting .. ':status') == 'waiting'
    and redis.call('HGET', STEPS, waiting .. ':signal') then
  -- It waits for a signal: look when its deadline passes (then it runs once more and fails).
  local deadline = tonumber(redis.call('HGET', STEPS, waiting .. ':signal_deadline') or '0')
  if deadline > now then
    attention(deadline)
    return {'not_due'}
  end
  attention(now + HANDOFF_S)
  return {'recover', status, '0', '0'}
end
if waiting ~= '' and redis.call('HGET', STEPS, waiting .. ':status') == 'waiting' then
  -- It waits for its child saga: look again later, without counting it as a recovery (the
  -- caller checks that the child's end was not lost).
  attention(now + HANDOFF_S)
  return {'recover', status, '0', '0'}
end
if waiting ~= '' then
  local lease = tonumber(redis.call('HGET', STEPS, waiting .. ':lease_until') or '0')
  if redis.call('HGET', STEPS, waiting .. ':status') == 'running' and lease > now then
    attention(lease)
    return {'alive', fmt(lease - now)}
  end
end
local parked = cjson.decode(redis.call('HGET', SAGA, 'parked') or '{}')
if next(parked) ~= nil then
  -- A step (a branch) waits for a signal: drive the others on at the hand-off time, and this
  -- one at its deadline, without counting a recovery (waiting is not a lack of progress).
  local earliest = now + HANDOFF_S
  for _, deadline in pairs(parked) do earliest = math.min(earliest, deadline) end
  attention(math.max(earliest, now + 1))
  return {'recover', status, '0', '0'}
end
local recoveries = redis.call('HINCRBY', SAGA, 'recoveries', 1)
-- Space recoveries of one saga out: a saga that is merely slow is not flooded with copies.
attention(now + math.min(HANDOFF_S * 2 ^ (recoveries - 1), 3600))
log({at = now, event = 'saga.recovering', waiting_on = waiting, recovery = recoveries})
local exhausted = '0'
if recoveries > max_recoveries then exhausted = '1' end
return {'recover', status, recoveries, exhausted}
