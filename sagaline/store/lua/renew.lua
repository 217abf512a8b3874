-- Renew the lease of a running attempt (the heartbeat). ARGV[5..]: role, step, attempt,
-- lease_s. Returns {'ok', stop} while this attempt holds the lease, else {'lost', ''}:
-- another attempt took over, or the operation ended. stop is '1' when the saga was
-- cancelled, or (for an action or fallback) when the saga no longer goes forward.
local role, step, attempt, lease_s = ARGV[5], ARGV[6], tonumber(ARGV[7]), tonumber(ARGV[8])
local f = role .. ':' .. step .. ':'
if redis.call('HGET', STEPS, f .. 'status') ~= 'running'
    or tonumber(redis.call('HGET', STEPS, f .. 'attempts') or '0') ~= attempt then
  return {'lost', ''}
end
local now = now_s()
redis.call('HSET', STEPS, f .. 'lease_until', fmt(now + lease_s))
local status = redis.call('HGET', SAGA, 'status')
if status == 'running' or status == 'compensating' then attention(now + lease_s) end
local stop = redis.call('HGET', SAGA, 'cancel_requested') or ''
if role ~= 'compensation' and status ~= 'running' then stop = '1' end
return {'ok', stop}
