-- An operator fixed the cause of a compensation_failed saga: undo what is left.
-- Returns {'compensate', plan_json} with the failed compensations set pending again, or
-- {'noop', status} when the saga is not compensation_failed.
local status = redis.call('HGET', SAGA, 'status')
if status ~= 'compensation_failed' then return {'noop', status or 'missing'} end
local now = now_s()
local plan = decode_list(redis.call('HGET', SAGA, 'compensation_plan'))
local again = {}
for _, name in ipairs(plan) do
  local c = 'compensation:' .. name .. ':'
  if redis.call('HGET', STEPS, c .. 'status') == 'failed' then
    redis.call('HSET', STEPS, c .. 'status', 'pending')
    redis.call('HDEL', P .. 'dead_letters', ID .. ':' .. name)
    table.insert(again, name)
  end
end
move_status('compensation_failed', 'compensating', now)
redis.call('HDEL', SAGA, 'ended_at')
redis.call('HSET', SAGA, 'recoveries', '0')
redis.call('PERSIST', SAGA)
redis.call('PERSIST', STEPS)
redis.call('PERSIST', LOG)
attention(now + HANDOFF_S)
log({at = now, event = 'saga.compensation_retried', steps = again})
return {'compensate', encode_list(again)}
