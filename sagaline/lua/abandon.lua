-- A saga whose first message could not be enqueued: it ends failed, with nothing to undo.
-- ARGV: prefix, id, error_json, retention_s. Returns 1, or 0 when it was not running.
if redis.call('HGET', SAGA, 'status') ~= 'running' then return 0 end
local now = now_s()
redis.call('HSET', SAGA, 'error', ARGV[3])
conclude('running', 'failed', now, tonumber(ARGV[4]), {error = cjson.decode(ARGV[3])})
return 1
