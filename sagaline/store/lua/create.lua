-- Record a new saga. ARGV[5..]: name, correlation_id, causation_id, inputs_json, plan_json,
-- deadline_at ('' for none), parent_id and parent_step ('' unless it is a child saga),
-- definition_json (a saga assembled at runtime; '' for a declared one), traceparent and
-- trace_parent_id (the saga span's W3C trace context and the span it was started in; ''
-- for none), idempotency_key ('' for none). Returns 1, or 0 when a saga with this id exists
-- already; with an idempotency key already used (and its saga still kept), nothing is
-- created: {'duplicate', id, correlation_id} when that saga has this name and these inputs,
-- else {'conflict', id, name}.
local key = ARGV[16] or ''
local idem = P .. 'idempotency:' .. key
if key ~= '' then
  local existing = redis.call('GET', idem)
  if existing then
    local other = P .. 'saga:' .. existing
    local name, inputs, cid = unpack(redis.call('HMGET', other, 'name', 'inputs',
                                                'correlation_id'))
    if name then
      if name == ARGV[5] and inputs == ARGV[8] then return {'duplicate', existing, cid} end
      return {'conflict', existing, name}
    end
  end
end
if redis.call('EXISTS', SAGA) == 1 then return 0 end
local now = now_s()
local cid = ARGV[6]
redis.call('HSET', SAGA,
  'id', ID, 'name', ARGV[5], 'status', 'running', 'correlation_id', cid,
  'causation_id', ARGV[7], 'inputs', ARGV[8], 'plan', ARGV[9],
  'created_at', fmt(now), 'updated_at', fmt(now), 'cursor', '-1', 'recoveries', '0',
  'traceparent', ARGV[14] or '', 'trace_parent_id', ARGV[15] or '')
redis.call('ZADD', P .. 'index:all', now, ID)
redis.call('ZADD', P .. 'index:status:running', now, ID)
redis.call('SADD', P .. 'index:correlation:' .. cid, ID)
redis.call('PERSIST', P .. 'index:correlation:' .. cid)
if ARGV[13] and ARGV[13] ~= '' then redis.call('HSET', SAGA, 'definition', ARGV[13]) end
if key ~= '' then
  redis.call('SET', idem, ID)
  redis.call('HSET', SAGA, 'idempotency_key', key)
end
if ARGV[11] and ARGV[11] ~= '' then
  redis.call('HSET', SAGA, 'parent_id', ARGV[11], 'parent_step', ARGV[12])
end
if ARGV[10] ~= '' then
  redis.call('HSET', SAGA, 'deadline_at', ARGV[10])
  redis.call('ZADD', P .. 'index:deadline', tonumber(ARGV[10]), ID)
end
local plan = decode_list(ARGV[9])
if #plan > 0 then redis.call('HSET', SAGA, 'waiting_on', 'action:' .. plan[1]) end
attention(now + HANDOFF_S)
log({at = now, event = 'saga.started', saga = ARGV[5]})
return 1
