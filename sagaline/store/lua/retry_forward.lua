-- An operator fixed what stopped a saga past its pivot: drive it forward again.
-- Steps whose action (or fallback) failed are set pending again (their attempts kept, so
-- each gets one more attempt), and the saga runs. Returns {'ok'}, or {'noop', status} when it is not needs_attention.
local status = redis.call('HGET', SAGA, 'status')
if status ~= 'needs_attention' then return {'noop', status or 'missing'} end
local now = now_s()
local again = {}
for _, name in ipairs(decode_list(redis.call('HGET', SAGA, 'plan'))) do
  if redis.call('HGET', STEPS, 'action:' .. name .. ':status') == 'failed' then
    redis.call('HSET', STEPS, 'action:' .. name .. ':status', 'pending')
    redis.call('HDEL', STEPS, 'fallback:' .. name .. ':status')
    table.insert(again, name)
  end
end
move_status('needs_attention', 'running', now)
redis.call('HSET', SAGA, 'recoveries', '0', 'failed_step', '', 'error', '')
attention(now + HANDOFF_S)
log({at = now, event = 'saga.resumed', steps = again})
return {'ok'}
