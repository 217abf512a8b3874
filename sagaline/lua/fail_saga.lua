-- The forward path failed for good: turn the saga to compensating, exactly once.
-- ARGV[5..]: failed_step, error_json, steps_json ([[name, has_compensation], ...] in
-- forward order).
-- Returns {'compensate', plan_json, awaiting}: the compensations, in order, and '1' when the
-- first awaits an action still in flight; or {'noop', status} when
-- the saga was not running (another caller got there first).
local failed_step, error_json = ARGV[5], ARGV[6]
local status = redis.call('HGET', SAGA, 'status')
if status ~= 'running' then return {'noop', status or 'missing'} end
local now = now_s()
if failed_step ~= '' then
  local f = 'action:' .. failed_step .. ':'
  local st = redis.call('HGET', STEPS, f .. 'status')
  if st == 'failed' then
    -- The worker recorded the failure itself: its record (attempt, details) is the better one.
    error_json = redis.call('HGET', STEPS, f .. 'error') or error_json
  elseif st ~= 'completed' then
    -- The worker could not record it (hard time limit, lost process): record it here.
    redis.call('HSET', STEPS, f .. 'status', 'failed', f .. 'error', error_json,
               f .. 'ended_at', fmt(now))
    redis.call('HDEL', STEPS, f .. 'lease_until')
  end
end
move_status('running', 'compensating', now)
redis.call('HSET', SAGA, 'failed_step', failed_step, 'error', error_json, 'recoveries', '0')
log({at = now, event = 'saga.failed', step = failed_step, error = cjson.decode(error_json)})
local plan, awaiting = plan_rollback(ARGV[7], now)
if not maybe_conclude_compensation(now) then attention(now + HANDOFF_S) end
return {'compensate', encode_list(plan), awaiting}
