-- A saga whose first message could not be enqueued: it ends failed, with nothing to undo.
-- ARGV[5..]: error_json. Returns 1, or 0 when it was not running.
if redis.call('HGET', SAGA, 'status') ~= 'running' then return 0 end
local now = now_s()
redis.call('HSET', SAGA, 'error', ARGV[5])
conclude('running', 'failed', now, {error = cjson.decode(ARGV[5])})
return 1
