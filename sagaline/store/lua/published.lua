-- Record that the first ARGV[5] log entries were published to the event bus, and release
-- the relay's lock when ARGV[6] is its token. The count only moves forward; once it covers
-- the whole log, the saga leaves the outbox index. Returns the entries still unpublished
-- (0 when the saga is gone).
local lock = SAGA .. ':outbox_lock'
if ARGV[6] and ARGV[6] ~= '' and redis.call('GET', lock) == ARGV[6] then
  redis.call('DEL', lock)
end
if redis.call('EXISTS', SAGA) == 0 then
  redis.call('ZREM', P .. 'index:outbox', ID)
  return 0
end
local count = tonumber(ARGV[5])
local current = tonumber(redis.call('HGET', SAGA, 'events_published') or '0')
if count > current then
  redis.call('HSET', SAGA, 'events_published', count)
  current = count
end
local length = redis.call('LLEN', LOG)
if current >= length then
  redis.call('ZREM', P .. 'index:outbox', ID)
end
return length - current
