-- Take a saga's outbox for one relay: a lock, then what to publish.
-- ARGV[5..]: token, lock_ms. Returns {'busy'} when another relay holds it; {'gone'} when
-- the saga expired (it leaves the index); else {'ok', published, name, correlation_id,
-- causation_id, entry...}: the whole log, since earlier entries fix later causes.
local lock = SAGA .. ':outbox_lock'
if redis.call('EXISTS', SAGA) == 0 then
  redis.call('ZREM', P .. 'index:outbox', ID)
  return {'gone'}
end
if not redis.call('SET', lock, ARGV[5], 'NX', 'PX', tonumber(ARGV[6])) then
  return {'busy'}
end
local out = {'ok', redis.call('HGET', SAGA, 'events_published') or '0'}
local fields = redis.call('HMGET', SAGA, 'name', 'correlation_id', 'causation_id')
for i = 1, 3 do table.insert(out, fields[i] or '') end
for _, entry in ipairs(redis.call('LRANGE', LOG, 0, -1)) do table.insert(out, entry) end
return out
