-- The forward path failed for good: turn the saga to compensating, exactly once.
-- ARGV: prefix, id, failed_step, error_json, steps_json ([[name, has_compensation], ...] in
-- forward order), retention_s.
-- Returns {'compensate', plan_json} with the compensations to run, in order (completed
-- steps with a compensation, last first), or {'noop', status} when the saga was not running.
local failed_step, error_json = ARGV[3], ARGV[4]
local retention_s = tonumber(ARGV[6])
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
redis.call('HSET', SAGA, 'failed_step', failed_step, 'error', error_json)
log({at = now, event = 'saga.failed', step = failed_step, error = cjson.decode(error_json)})
local steps = cjson.decode(ARGV[5])
local plan = {}
for i = #steps, 1, -1 do
  local name, has_compensation = steps[i][1], steps[i][2]
  if redis.call('HGET', STEPS, 'action:' .. name .. ':status') == 'completed' then
    if has_compensation then
      table.insert(plan, name)
      redis.call('HSET', STEPS, 'compensation:' .. name .. ':status', 'pending')
    else
      log({at = now, event = 'compensation.skipped', step = name,
           reason = 'the step declares no compensation'})
    end
  end
end
local plan_json = '[]'
if #plan > 0 then plan_json = cjson.encode(plan) end
redis.call('HSET', SAGA, 'compensation_plan', plan_json)
if #plan == 0 then maybe_conclude_compensation(now, retention_s) end
return {'compensate', plan_json}
