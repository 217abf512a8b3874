-- Record that an attempt of a step's action or compensation succeeded.
-- ARGV[5..]: role, step, attempt, result_json, saga_result_json ('' unless this was the
-- last forward step), next_step (the forward step after this one, '' if none),
-- events_json (events the operation emitted, '' for none).
-- Returns 'ok'; 'duplicate' (already completed: the first result stands); 'stale' (this
-- attempt lost its lease to a newer one, which will record the outcome); or 'late' (an
-- action that completed after its saga turned to compensating: its compensation is now
-- due, and the caller must enqueue the compensations left).
local role, step, attempt = ARGV[5], ARGV[6], tonumber(ARGV[7])
local f = role .. ':' .. step .. ':'
local st = redis.call('HGET', STEPS, f .. 'status')
if st == 'completed' then return 'duplicate' end
if st ~= 'running' or tonumber(redis.call('HGET', STEPS, f .. 'attempts') or '0') ~= attempt then
  return 'stale'
end
local now = now_s()
redis.call('HSET', STEPS, f .. 'status', 'completed', f .. 'result', ARGV[8],
           f .. 'ended_at', fmt(now))
redis.call('HDEL', STEPS, f .. 'lease_until')
redis.call('HSET', SAGA, 'recoveries', '0', 'waiting_on', '', 'updated_at', fmt(now))
if ARGV[11] and ARGV[11] ~= '' then
  -- Events the operation emitted: logged (so published) only with the recorded attempt.
  for _, emitted in ipairs(cjson.decode(ARGV[11])) do
    log({at = now, event = 'emit', step = step, role = role, attempt = attempt,
         name = emitted.name, payload = emitted.payload, source = emitted.source})
  end
end
log({at = now, event = role .. '.completed', step = step, attempt = attempt})
local status = redis.call('HGET', SAGA, 'status')
if role == 'action' then
  if status == 'running' then
    if ARGV[9] ~= '' then
      redis.call('HSET', SAGA, 'result', ARGV[9])
      conclude('running', 'completed', now, nil)
    else
      -- The saga now waits for the next step's message.
      if ARGV[10] ~= '' then redis.call('HSET', SAGA, 'waiting_on', 'action:' .. ARGV[10]) end
      attention(now + HANDOFF_S)
    end
  elseif status == 'compensating' then
    local c = 'compensation:' .. step .. ':status'
    if redis.call('HGET', STEPS, c) == 'awaiting' then
      redis.call('HSET', STEPS, c, 'pending')
      attention(now + HANDOFF_S)
      return 'late'
    end
  end
elseif role == 'compensation' then
  if not maybe_conclude_compensation(now) then attention(now + HANDOFF_S) end
end
return 'ok'
