-- Complete a running saga whose last element, a group, completed. ARGV[5..]: result_json.
-- Returns 1, or 0 when it was not running (another caller finished it first).
if redis.call('HGET', SAGA, 'status') ~= 'running' then return 0 end
local now = now_s()
redis.call('HSET', SAGA, 'result', ARGV[5], 'waiting_on', '')
conclude('running', 'completed', now, nil)
return 1
