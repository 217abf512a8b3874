-- Record that an attempt of a step's action or compensation failed.
-- ARGV[5..]: role, step, attempt (0: whichever attempt is current), error_json, retry_in_s
-- ('' when it will not be retried), fallback ('1' when the step's fallback is tried once
-- its action gives up).
-- Returns 'fallback' when the action gave up and the fallback is now due (the caller
-- enqueues it); otherwise as below.
-- Returns 'ok'; 'stale' (the attempt is no longer the current one, or already final); or
-- 'late' (an action that was in flight when its saga turned to compensating: it is not
-- retried, nothing of it is undone, and the caller must enqueue the compensations left).
local role, step, attempt = ARGV[5], ARGV[6], tonumber(ARGV[7])
local error_json, retry_in = ARGV[8], ARGV[9]
local f = role .. ':' .. step .. ':'
local st = redis.call('HGET', STEPS, f .. 'status')
if FINAL[st] then return 'stale' end
if attempt > 0 and (st ~= 'running' or
    tonumber(redis.call('HGET', STEPS, f .. 'attempts') or '0') ~= attempt) then
  return 'stale'
end
if attempt == 0 then
  -- Failed from outside (the sweep, an errback): log the attempt that was current, if any.
  attempt = tonumber(redis.call('HGET', STEPS, f .. 'attempts') or '0')
  if attempt == 0 then attempt = nil end
  -- An action still running was lost with its process: what it did is unknown, so a
  -- rollback undoes it as if it had completed (plan_rollback).
  if st == 'running' and role == 'action' then redis.call('HSET', STEPS, f .. 'in_doubt', '1') end
end
local now = now_s()
local error = cjson.decode(error_json)
local status = redis.call('HGET', SAGA, 'status')
redis.call('HDEL', STEPS, f .. 'lease_until')
if role ~= 'compensation' and status ~= 'running' then
  redis.call('HSET', STEPS, f .. 'status', 'failed', f .. 'error', error_json,
             f .. 'ended_at', fmt(now))
  log({at = now, event = role .. '.failed', step = step, attempt = attempt, error = error})
  local c = 'compensation:' .. step .. ':status'
  if redis.call('HGET', STEPS, c) == 'awaiting' then
    redis.call('HSET', STEPS, c, 'skipped')
    log({at = now, event = 'compensation.skipped', step = step,
         reason = 'its action did not complete'})
    if not maybe_conclude_compensation(now) then attention(now + HANDOFF_S) end
    return 'late'
  end
  return 'stale'
end
if retry_in ~= '' then
  redis.call('HSET', STEPS, f .. 'status', 'retrying', f .. 'error', error_json)
  log({at = now, event = role .. '.retrying', step = step, attempt = attempt,
       retry_in_s = tonumber(retry_in), error = error})
  attention(now + tonumber(retry_in) + HANDOFF_S)
  return 'ok'
end
redis.call('HSET', STEPS, f .. 'status', 'failed', f .. 'error', error_json,
           f .. 'ended_at', fmt(now))
log({at = now, event = role .. '.failed', step = step, attempt = attempt, error = error})
if role == 'action' and ARGV[10] == '1' then
  redis.call('HSET', STEPS, 'fallback:' .. step .. ':status', 'queued')
  redis.call('HSET', SAGA, 'waiting_on', 'fallback:' .. step)
  log({at = now, event = 'fallback.due', step = step})
  attention(now + HANDOFF_S)
  return 'fallback'
end
if role == 'compensation' then
  dead_letter(step, error, tonumber(redis.call('HGET', STEPS, f .. 'attempts') or '0'), now)
  if not maybe_conclude_compensation(now) then attention(now + HANDOFF_S) end
else
  attention(now + HANDOFF_S)
end
return 'ok'
