-- The forward path failed for good: turn the saga to compensating, exactly once.
-- ARGV[5..]: failed_step, error_json, steps_json ([[name, has_compensation], ...] in
-- forward order, as plan_rollback reads it).
-- Past a completed pivot, the saga is not compensated: it turns needs_attention and this
-- returns {'needs_attention', pivot}.
-- Returns {'compensate', plan_json, awaiting}: the compensations, in order, and '1' when the
-- first awaits an action still in flight; or {'noop', status} when
-- the saga was not running (another caller got there first).
local failed_step, error_json = ARGV[5], ARGV[6]
local status = redis.call('HGET', SAGA, 'status')
if status ~= 'running' then return {'noop', status or 'missing'} end
local now = now_s()
if failed_step ~= '' then
  local f = 'action:' .. failed_step .. ':'
  local fb = 'fallback:' .. failed_step .. ':'
  local fst = redis.call('HGET', STEPS, fb .. 'status')
  if fst and not FINAL[fst] then
    -- Its fallback could not record its failure (hard time limit, lost process): record it.
    redis.call('HSET', STEPS, fb .. 'status', 'failed', fb .. 'error', error_json,
               fb .. 'ended_at', fmt(now))
    redis.call('HDEL', STEPS, fb .. 'lease_until')
  end
  local st = redis.call('HGET', STEPS, f .. 'status')
  if st == 'failed' then
    -- The worker recorded the failure itself: its record (attempt, details) is the better one.
    error_json = redis.call('HGET', STEPS, f .. 'error') or error_json
  elseif st ~= 'completed' then
    -- The worker could not record it (hard time limit, lost process): record it here.
    redis.call('HSET', STEPS, f .. 'status', 'failed', f .. 'error', error_json,
               f .. 'ended_at', fmt(now))
    redis.call('HDEL', STEPS, f .. 'lease_until')
    -- It was running: what it did before it was stopped is unknown, so it is undone too.
    if st == 'running' then redis.call('HSET', STEPS, f .. 'in_doubt', '1') end
  end
end
local pivot = pivot_passed(ARGV[7])
if pivot then
  -- Past a pivot the saga cannot be rolled back: it waits for an operator instead.
  move_status('running', 'needs_attention', now)
  redis.call('HSET', SAGA, 'failed_step', failed_step, 'error', error_json, 'waiting_on', '')
  redis.call('ZREM', ACTIVE, ID)
  redis.call('ZREM', P .. 'index:deadline', ID)
  log({at = now, event = 'saga.needs_attention', step = failed_step, pivot = pivot,
       error = cjson.decode(error_json)})
  redis.call('PUBLISH', P .. 'saga:' .. ID .. ':done', 'needs_attention')
  return {'needs_attention', pivot}
end
move_status('running', 'compensating', now)
redis.call('HSET', SAGA, 'failed_step', failed_step, 'error', error_json, 'recoveries', '0')
log({at = now, event = 'saga.failed', step = failed_step, error = cjson.decode(error_json)})
local plan, awaiting = plan_rollback(ARGV[7], now)
if not maybe_conclude_compensation(now) then attention(now + HANDOFF_S) end
return {'compensate', encode_list(plan), awaiting}
