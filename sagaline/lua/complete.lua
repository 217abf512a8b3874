-- Record that an attempt of a step's action or compensation succeeded.
-- ARGV: prefix, id, role, step, attempt, result_json, saga_result_json ('' unless this was
-- the last forward step), retention_s.
-- Returns 'ok', 'duplicate' (already completed: the first result stands) or 'stale' (this
-- attempt lost its lease to a newer one, which will record the outcome).
local role, step, attempt = ARGV[3], ARGV[4], tonumber(ARGV[5])
local retention_s = tonumber(ARGV[8])
local f = role .. ':' .. step .. ':'
local st = redis.call('HGET', STEPS, f .. 'status')
if st == 'completed' then return 'duplicate' end
if st ~= 'running' or tonumber(redis.call('HGET', STEPS, f .. 'attempts') or '0') ~= attempt then
  return 'stale'
end
local now = now_s()
redis.call('HSET', STEPS, f .. 'status', 'completed', f .. 'result', ARGV[6],
           f .. 'ended_at', fmt(now))
redis.call('HDEL', STEPS, f .. 'lease_until')
log({at = now, event = role .. '.completed', step = step, attempt = attempt})
if role == 'action' and ARGV[7] ~= '' then
  if redis.call('HGET', SAGA, 'status') == 'running' then
    redis.call('HSET', SAGA, 'result', ARGV[7])
    conclude('running', 'completed', now, retention_s, nil)
  end
elseif role == 'compensation' then
  maybe_conclude_compensation(now, retention_s)
end
return 'ok'
