-- Record a new saga. ARGV: prefix, id, name, correlation_id, causation_id, inputs_json,
-- plan_json. Returns 1, or 0 when a saga with this id exists already.
if redis.call('EXISTS', SAGA) == 1 then return 0 end
local now = now_s()
local cid = ARGV[4]
redis.call('HSET', SAGA,
  'id', ID, 'name', ARGV[3], 'status', 'running', 'correlation_id', cid,
  'causation_id', ARGV[5], 'inputs', ARGV[6], 'plan', ARGV[7],
  'created_at', fmt(now), 'updated_at', fmt(now), 'cursor', '-1')
redis.call('ZADD', P .. 'index:all', now, ID)
redis.call('ZADD', P .. 'index:status:running', now, ID)
redis.call('SADD', P .. 'index:correlation:' .. cid, ID)
log({at = now, event = 'saga.started', saga = ARGV[3]})
return 1
