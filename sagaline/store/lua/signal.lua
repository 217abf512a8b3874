-- Signals: named messages from outside (an approval, a webhook) that a step waits for.
-- Every distinct payload of a name is kept once, in arrival order, on the saga's hash
-- (signal:{name}, one canonical JSON text a line), whether or not a step waits for it yet.
-- ARGV[5..]: mode, then
--   'send', name, payload_json, max_kept: keep the signal and wake the steps waiting for
--     it. Returns {'missing'}, {'inactive', status} (the saga is not running),
--     {'duplicate'} (this payload was received before), {'full', max_kept}, or
--     {'kept'|'delivered', count, woken steps...}: 'delivered' when it woke a step (the
--     caller sends it again).
--   'wait', role, step, attempt, name, timeout_s, seen: the claimed attempt waits for the
--     signal, holding no worker and no lease, until a new one comes or its deadline (set
--     by the step's first wait; later waits keep it). Returns {'ok', deadline, first}
--     (first: '1' when this wait set the deadline), {'wake'} (a signal came after the
--     function's last read, seen being how many it read: the caller sends it again),
--     {'timeout', deadline}, {'stopped', status} (its saga no longer runs), or {'stale'}.
local mode = ARGV[5]
local status = redis.call('HGET', SAGA, 'status')
if not status then return {'missing'} end
local now = now_s()

-- parked: {step: deadline} of the steps that wait for a signal (the sweep reads it).
local function park(step, deadline)
  local parked = cjson.decode(redis.call('HGET', SAGA, 'parked') or '{}')
  if deadline then parked[step] = deadline else parked[step] = nil end
  if next(parked) == nil then
    redis.call('HDEL', SAGA, 'parked')
  else
    redis.call('HSET', SAGA, 'parked', cjson.encode(parked))
  end
end

local function count_of(name)
  return tonumber(redis.call('HGET', SAGA, 'signals:' .. name) or '0')
end

if mode == 'send' then
  local name, payload, most = ARGV[6], ARGV[7], tonumber(ARGV[8])
  if status ~= 'running' then return {'inactive', status} end
  local field = 'signal:' .. name
  local kept = redis.call('HGET', SAGA, field) or ''
  if kept ~= '' and string.find('\n' .. kept .. '\n', '\n' .. payload .. '\n', 1, true) then
    return {'duplicate'}
  end
  local count = count_of(name)
  if count >= most then return {'full', most} end
  if kept == '' then kept = payload else kept = kept .. '\n' .. payload end
  redis.call('HSET', SAGA, field, kept, 'signals:' .. name, count + 1)
  log({at = now, event = 'signal.received', signal = name, count = count + 1})
  local waiters = decode_list(redis.call('HGET', SAGA, 'waiters:' .. name))
  redis.call('HDEL', SAGA, 'waiters:' .. name)
  local out = {'kept', count + 1}
  for _, step in ipairs(waiters) do
    local f = 'action:' .. step .. ':'
    if redis.call('HGET', STEPS, f .. 'status') == 'waiting'
        and redis.call('HGET', STEPS, f .. 'signal') == name then
      redis.call('HSET', STEPS, f .. 'status', 'queued')
      redis.call('HDEL', STEPS, f .. 'signal')
      park(step, nil)
      log({at = now, event = 'action.woken', step = step, signal = name})
      out[1] = 'delivered'
      table.insert(out, step)
    end
  end
  if out[1] == 'delivered' then attention(now + HANDOFF_S) end
  return out
end

-- 'wait'
local role, step, attempt = ARGV[6], ARGV[7], tonumber(ARGV[8])
local name, timeout_s, seen = ARGV[9], tonumber(ARGV[10]), tonumber(ARGV[11])
local f = role .. ':' .. step .. ':'
if redis.call('HGET', STEPS, f .. 'status') ~= 'running'
    or tonumber(redis.call('HGET', STEPS, f .. 'attempts') or '0') ~= attempt then
  return {'stale'}
end
if status ~= 'running' then return {'stopped', status} end
local first = '0'
local deadline = tonumber(redis.call('HGET', STEPS, f .. 'signal_deadline') or '')
if not deadline then
  deadline = now + timeout_s
  first = '1'
  redis.call('HSET', STEPS, f .. 'signal_deadline', fmt(deadline))
end
if now >= deadline then return {'timeout', fmt(deadline)} end
if count_of(name) > seen then
  -- A signal came while the function ran: run it again rather than wait for the next.
  redis.call('HSET', STEPS, f .. 'status', 'queued')
  redis.call('HINCRBY', STEPS, f .. 'attempts', -1)
  redis.call('HDEL', STEPS, f .. 'lease_until')
  attention(now + HANDOFF_S)
  return {'wake'}
end
-- The attempt is resumed when it wakes: it does not count as one the retry policy spent.
redis.call('HINCRBY', STEPS, f .. 'attempts', -1)
redis.call('HSET', STEPS, f .. 'status', 'waiting', f .. 'signal', name)
redis.call('HDEL', STEPS, f .. 'lease_until')
local waiters = decode_list(redis.call('HGET', SAGA, 'waiters:' .. name))
local listed = false
for _, s in ipairs(waiters) do if s == step then listed = true end end
if not listed then
  table.insert(waiters, step)
  redis.call('HSET', SAGA, 'waiters:' .. name, cjson.encode(waiters))
end
park(step, deadline)
log({at = now, event = 'action.waiting', step = step, signal = name,
     until_at = deadline})
attention(deadline)
return {'ok', fmt(deadline), first}
