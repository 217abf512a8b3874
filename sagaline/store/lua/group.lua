-- Open a group of branches, or drive it on: mark what it may start now and return it.
-- ARGV[5..]: group_json ({name, branches, limit}), force ('1': also return the branches in
-- flight, which the recovery sweep re-sends). Returns {'ok', branches to enqueue...}, or
-- {'inactive', status} when the saga is not running.
local status = redis.call('HGET', SAGA, 'status')
if status ~= 'running' then return {'inactive', status or 'missing'} end
local now = now_s()
local group = cjson.decode(ARGV[5])
local start = fill_group(group, ARGV[6] == '1', now)
redis.call('HSET', SAGA, 'waiting_on', 'group:' .. group.name, 'updated_at', fmt(now))
attention(now + HANDOFF_S)
table.insert(start, 1, 'ok')
return start
