-- A step that runs a child saga, on the parent's records. ARGV[5..]: mode, then
--   'wait', role, step, attempt, child_id: the claimed attempt now waits for the child
--     (its action: the child runs; its compensation: the child's rollback runs) without
--     holding a worker or a lease. Returns 'ok' or 'stale'.
--   'done', step, child_status, child_result_json, error_json: the child ended. Returns
--     'completed' / 'failed' (the parent's step ended: drive the parent on or fail it),
--     'late' (the parent is compensating: enqueue its compensations left), 'undone' (the
--     child's rollback ended: the parent's compensation is recorded), or 'stale'.
local now = now_s()
if ARGV[5] == 'wait' then
  local f = ARGV[6] .. ':' .. ARGV[7] .. ':'
  if redis.call('HGET', STEPS, f .. 'status') ~= 'running'
      or tonumber(redis.call('HGET', STEPS, f .. 'attempts') or '0') ~= tonumber(ARGV[8]) then
    return 'stale'
  end
  redis.call('HSET', STEPS, f .. 'status', 'waiting', f .. 'child', ARGV[9])
  redis.call('HDEL', STEPS, f .. 'lease_until')
  log({at = now, event = ARGV[6] .. '.waiting', step = ARGV[7], child = ARGV[9]})
  attention(now + HANDOFF_S)
  return 'ok'
end
local step, child_status, result_json, error_json = ARGV[6], ARGV[7], ARGV[8], ARGV[9]
local a, c = 'action:' .. step .. ':', 'compensation:' .. step .. ':'
local status = redis.call('HGET', SAGA, 'status')
if redis.call('HGET', STEPS, c .. 'status') == 'waiting' then
  if child_status == 'compensated' or child_status == 'cancelled' then
    redis.call('HSET', STEPS, c .. 'status', 'completed', c .. 'result', result_json,
               c .. 'ended_at', fmt(now))
    log({at = now, event = 'compensation.completed', step = step,
         attempt = tonumber(redis.call('HGET', STEPS, c .. 'attempts') or '1')})
  elseif child_status == 'compensation_failed' then
    redis.call('HSET', STEPS, c .. 'status', 'failed', c .. 'error', error_json,
               c .. 'ended_at', fmt(now))
    dead_letter(step, cjson.decode(error_json), 1, now)
    log({at = now, event = 'compensation.failed', step = step, error = cjson.decode(error_json)})
  else
    return 'stale'
  end
  if not maybe_conclude_compensation(now) then attention(now + HANDOFF_S) end
  return 'undone'
end
if redis.call('HGET', STEPS, a .. 'status') ~= 'waiting' then return 'stale' end
if child_status == 'completed' then
  redis.call('HSET', STEPS, a .. 'status', 'completed', a .. 'result', result_json,
             a .. 'ended_at', fmt(now))
  redis.call('HSET', SAGA, 'recoveries', '0', 'waiting_on', '', 'updated_at', fmt(now))
  log({at = now, event = 'action.completed', step = step,
       attempt = tonumber(redis.call('HGET', STEPS, a .. 'attempts') or '1')})
  if status == 'running' then
    attention(now + HANDOFF_S)
    return 'completed'
  end
  if status == 'compensating' and redis.call('HGET', STEPS, c .. 'status') == 'awaiting' then
    redis.call('HSET', STEPS, c .. 'status', 'pending')
    attention(now + HANDOFF_S)
    return 'late'
  end
  return 'stale'
end
redis.call('HSET', STEPS, a .. 'status', 'failed', a .. 'error', error_json,
           a .. 'ended_at', fmt(now))
log({at = now, event = 'action.failed', step = step, error = cjson.decode(error_json)})
if status == 'running' then return 'failed' end
if status == 'compensating' and redis.call('HGET', STEPS, c .. 'status') == 'awaiting' then
  redis.call('HSET', STEPS, c .. 'status', 'skipped')
  log({at = now, event = 'compensation.skipped', step = step,
       reason = 'its child saga did not complete'})
  if not maybe_conclude_compensation(now) then attention(now + HANDOFF_S) end
  return 'late'
end
return 'stale'
