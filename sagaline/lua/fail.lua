-- Record that an attempt of a step's action or compensation failed.
-- ARGV: prefix, id, role, step, attempt (0: whichever attempt is current), error_json,
-- retry_in_s ('' when it will not be retried), retention_s.
-- Returns 'ok' or 'stale' (the attempt is no longer the current one, or already final).
local role, step, attempt = ARGV[3], ARGV[4], tonumber(ARGV[5])
local retry_in, retention_s = ARGV[7], tonumber(ARGV[8])
local f = role .. ':' .. step .. ':'
local st = redis.call('HGET', STEPS, f .. 'status')
if st == 'completed' or st == 'failed' then return 'stale' end
if attempt > 0 and (st ~= 'running' or
    tonumber(redis.call('HGET', STEPS, f .. 'attempts') or '0') ~= attempt) then
  return 'stale'
end
local now = now_s()
local error = cjson.decode(ARGV[6])
redis.call('HDEL', STEPS, f .. 'lease_until')
if retry_in ~= '' then
  redis.call('HSET', STEPS, f .. 'status', 'retrying', f .. 'error', ARGV[6])
  log({at = now, event = role .. '.retrying', step = step, attempt = attempt,
       retry_in_s = tonumber(retry_in), error = error})
else
  redis.call('HSET', STEPS, f .. 'status', 'failed', f .. 'error', ARGV[6],
             f .. 'ended_at', fmt(now))
  log({at = now, event = role .. '.failed', step = step, attempt = attempt, error = error})
  if role == 'compensation' then maybe_conclude_compensation(now, retention_s) end
end
return 'ok'
