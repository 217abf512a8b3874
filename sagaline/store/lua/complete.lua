-- Record that an attempt of a step's action or compensation succeeded.
-- ARGV[5..]: role, step, attempt, result_json, saga_result_json ('' unless this was the
-- last forward step), next_step (the forward step after this one, '' if none), group_json
-- (a branch's group: {name, branches, limit}; '' for a step of its own), plan_json (the
-- run's steps, when this step added some after itself; '' otherwise), events_json (events
-- the operation emitted, '' for none).
-- A branch of a group gets a list: {'ok', branches to start...} or {'group_done'} (it was
-- the last of its group to complete), or {outcome} for the outcomes below.
-- A compensation gets 'continue' when the rollback goes on (the caller enqueues what is
-- next) and 'ok' when this was the last one and the saga concluded.
-- Returns 'ok'; 'duplicate' (already completed: the first result stands); 'stale' (this
-- attempt lost its lease to a newer one, which will record the outcome); or 'late' (an
-- action that completed after its saga turned to compensating: its compensation is now
-- due, and the caller must enqueue the compensations left).
local role, step, attempt = ARGV[5], ARGV[6], tonumber(ARGV[7])
local f = role .. ':' .. step .. ':'
local st = redis.call('HGET', STEPS, f .. 'status')
local group = nil
if ARGV[11] and ARGV[11] ~= '' then group = cjson.decode(ARGV[11]) end
local function reply(outcome)
  if group then return {outcome} end
  return outcome
end
if st == 'completed' then return reply('duplicate') end
if st ~= 'running' or tonumber(redis.call('HGET', STEPS, f .. 'attempts') or '0') ~= attempt then
  return reply('stale')
end
local now = now_s()
redis.call('HSET', STEPS, f .. 'status', 'completed', f .. 'result', ARGV[8],
           f .. 'ended_at', fmt(now))
redis.call('HDEL', STEPS, f .. 'lease_until')
redis.call('HSET', SAGA, 'recoveries', '0', 'waiting_on', '', 'updated_at', fmt(now))
if ARGV[13] and ARGV[13] ~= '' then
  -- Events the operation emitted: logged (so published) only with the recorded attempt.
  for _, emitted in ipairs(cjson.decode(ARGV[13])) do
    log({at = now, event = 'emit', step = step, role = role, attempt = attempt,
         name = emitted.name, payload = emitted.payload, source = emitted.source})
  end
end
if ARGV[12] and ARGV[12] ~= '' then
  redis.call('HSET', SAGA, 'plan', ARGV[12])
  log({at = now, event = 'saga.steps_added', step = step, plan = cjson.decode(ARGV[12])})
end
local via = nil
if role == 'compensation' then via = redis.call('HGET', STEPS, f .. 'via') end
log({at = now, event = role .. '.completed', step = step, attempt = attempt, via = via})
local status = redis.call('HGET', SAGA, 'status')
if role ~= 'compensation' then
  if status == 'running' and group then
    attention(now + HANDOFF_S)
    local start, all_done = fill_group(group, false, now)
    if all_done then
      log({at = now, event = 'group.completed', group = group.name})
      return {'group_done'}
    end
    table.insert(start, 1, 'ok')
    return start
  elseif status == 'running' then
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
      return reply('late')
    end
  end
  return reply('ok')
end
if not maybe_conclude_compensation(now) then
  attention(now + HANDOFF_S)
  return 'continue'
end
return 'ok'
