-- Roll back a completed saga, because its parent is compensating the step that ran it.
-- ARGV[5..]: steps_json (as plan_rollback reads it), error_json.
-- Returns {'compensate', plan_json, awaiting}, or {'noop', status} when it is not completed
-- (it never completed, or its rollback already began). A child that already ended otherwise
-- is listed in children_done again, so its parent's compensation learns how it ended.
local status = redis.call('HGET', SAGA, 'status')
if status ~= 'completed' then
  if status and status ~= 'running' and status ~= 'compensating' then
    local parent = redis.call('HGET', SAGA, 'parent_id')
    if parent and parent ~= '' then redis.call('RPUSH', P .. 'children_done', ID) end
  end
  return {'noop', status or 'missing'}
end
local now = now_s()
move_status('completed', 'compensating', now)
redis.call('HDEL', SAGA, 'ended_at')
redis.call('HSET', SAGA, 'error', ARGV[6], 'recoveries', '0')
redis.call('PERSIST', SAGA)
redis.call('PERSIST', STEPS)
redis.call('PERSIST', LOG)
log({at = now, event = 'saga.undoing', reason = 'its parent saga is compensating'})
local plan, awaiting = plan_rollback(ARGV[5], now)
if not maybe_conclude_compensation(now) then attention(now + HANDOFF_S) end
return {'compensate', encode_list(plan), awaiting}
