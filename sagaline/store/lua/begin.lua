-- Claim one attempt of a step's action, fallback or compensation.
-- ARGV[5..]: role, step, index, lease_s, needed_json (steps whose results to return),
-- faults ('1' to honour injected faults), max_attempts (how many attempts may have been
-- made before a takeover is refused; 0: no limit).
-- An attempt still marked running whose lease ran out was lost with its process (killed
-- mid-step): it is taken over, so a step whose process dies every time is not attempted
-- without end.
-- Returns one of:
--   {'run', attempt, inputs_json, correlation_id, fault, parent_id, started,
--       result_json...}  run it now; when fault is not '', an injected fault says this
--       attempt must fail with that message; parent_id is the parent saga's id for a child
--       saga ('' otherwise); started is the position and JSON of the 'started' log entry
--   {'waiting'}  it waits for its child saga to end
--   {'completed', result_json, cursor}  it completed before: a redelivered message
--   {'busy', seconds_left}   another attempt holds a live lease
--   {'inactive', saga_status}  the saga is not in a state where this may run
--   {'failed'}   it failed finally before: a redelivered message
--   {'lost', attempts}  every attempt the policy allows was lost with its process: the
--       caller records the final failure
--   {'missing'}  no such saga (expired or never recorded)
local role, step = ARGV[5], ARGV[6]
local index, lease_s = tonumber(ARGV[7]), tonumber(ARGV[8])
local status = redis.call('HGET', SAGA, 'status')
if not status then return {'missing'} end
local want = 'compensating'
if role ~= 'compensation' then want = 'running' end
local f = role .. ':' .. step .. ':'
local st = redis.call('HGET', STEPS, f .. 'status')
local now = now_s()
-- A message for an operation that must not run now is a duplicate (or late): say so.
local function duplicate(reason)
  log({at = now, event = role .. '.duplicate', step = step, reason = reason})
end
if status ~= want then
  duplicate('the saga is ' .. status)
  return {'inactive', status}
end
if st == 'completed' then
  duplicate('it completed before')
  return {'completed', redis.call('HGET', STEPS, f .. 'result') or 'null',
          redis.call('HGET', SAGA, 'cursor') or '-1'}
end
if st == 'failed' or st == 'skipped' then
  duplicate('it ended before')
  return {'failed'}
end
if st == 'waiting' then
  local deadline = tonumber(redis.call('HGET', STEPS, f .. 'signal_deadline') or '')
  if not (deadline and deadline <= now and redis.call('HGET', STEPS, f .. 'signal')) then
    duplicate('it waits for its child saga or a signal')
    return {'waiting'}
  end
  -- It waited for a signal past its deadline: one last run (its wait answers 'timeout').
  redis.call('HDEL', STEPS, f .. 'signal')
  local parked = cjson.decode(redis.call('HGET', SAGA, 'parked') or '{}')
  parked[step] = nil
  if next(parked) == nil then redis.call('HDEL', SAGA, 'parked')
  else redis.call('HSET', SAGA, 'parked', cjson.encode(parked)) end
end
if st == 'awaiting' then
  duplicate('its action is still in flight')
  return {'busy', '1'}
end
if st == 'running' then
  local lease = tonumber(redis.call('HGET', STEPS, f .. 'lease_until') or '0')
  if lease > now then
    duplicate('another attempt holds the lease')
    return {'busy', fmt(lease - now)}
  end
  local tried = tonumber(redis.call('HGET', STEPS, f .. 'attempts') or '0')
  local most = tonumber(ARGV[11] or '0') or 0
  if most > 0 and tried >= most then
    -- Its outcome is unknown (the process may have died after the effect): once failed, a
    -- rollback still undoes it (plan_rollback), as for an awaited action (awaited.lua).
    redis.call('HSET', STEPS, f .. 'in_doubt', '1')
    return {'lost', tried}
  end
end
local attempt = redis.call('HINCRBY', STEPS, f .. 'attempts', 1)
redis.call('HSET', STEPS, f .. 'status', 'running', f .. 'lease_until', fmt(now + lease_s))
if attempt == 1 then redis.call('HSET', STEPS, f .. 'started_at', fmt(now)) end
local times = redis.call('HGET', STEPS, f .. 'attempt_times')
if times then times = times .. ',' .. fmt(now) else times = fmt(now) end
redis.call('HSET', STEPS, f .. 'attempt_times', times)
if role ~= 'compensation' then
  local cursor = tonumber(redis.call('HGET', SAGA, 'cursor') or '-1')
  if index > cursor then redis.call('HSET', SAGA, 'cursor', index) end
  redis.call('HSET', SAGA, 'current_step', step)
end
redis.call('HSET', SAGA, 'waiting_on', role .. ':' .. step, 'updated_at', fmt(now))
attention(now + lease_s)
log({at = now, event = role .. '.started', step = step, attempt = attempt})
local fault = ''
if ARGV[10] == '1' then
  local field = redis.call('HGET', SAGA, 'name') .. ':' .. role .. ':' .. step
  local raw = redis.call('HGET', P .. 'faults', field)
  if raw then
    local spec = cjson.decode(raw)
    if spec.times ~= 0 then
      fault = spec.message
      if spec.times > 0 then
        spec.times = spec.times - 1
        redis.call('HSET', P .. 'faults', field, cjson.encode(spec))
      end
    end
  end
end
-- The started entry and its position: the id of the event it stands for (lifecycle.py).
local started = redis.call('LLEN', LOG) - 1
local out = {'run', attempt, redis.call('HGET', SAGA, 'inputs'),
             redis.call('HGET', SAGA, 'correlation_id') or '', fault,
             redis.call('HGET', SAGA, 'parent_id') or '',
             started .. ' ' .. redis.call('LINDEX', LOG, started)}
for _, name in ipairs(decode_list(ARGV[9])) do
  table.insert(out, redis.call('HGET', STEPS, 'action:' .. name .. ':result')
                    or redis.call('HGET', STEPS, 'fallback:' .. name .. ':result') or 'null')
end
return out
