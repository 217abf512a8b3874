-- The store's own housekeeping, outside any one saga (run without the prelude).
-- ARGV[1] is the key prefix, ARGV[2] what to do:
-- 'prune' (ARGV[3] retention in seconds; ARGV[4..] the final statuses): drop index entries
--   older than the retention time; returns how many went.
-- 'forget' (ARGV[3] the index's name, ARGV[4..] saga ids): drop ids whose records expired
--   from one index; returns how many went.
-- 'next_child_done': take the id of a child saga that ended, or false.
-- 'fault' (ARGV[3] field, ARGV[4] spec JSON): inject a fault; 'clear_faults': remove all.
local P, what = ARGV[1], ARGV[2]
if what == 'prune' then
  local t = redis.call('TIME')
  local cutoff = tonumber(t[1]) - tonumber(ARGV[3])
  local removed = redis.call('ZREMRANGEBYSCORE', P .. 'index:all', '-inf', cutoff)
  for i = 4, #ARGV do
    removed = removed + redis.call('ZREMRANGEBYSCORE', P .. 'index:status:' .. ARGV[i], '-inf',
                                   cutoff)
  end
  return removed
elseif what == 'forget' then
  local removed = 0
  for i = 4, #ARGV do
    removed = removed + redis.call('ZREM', P .. 'index:' .. ARGV[3], ARGV[i])
  end
  return removed
elseif what == 'next_child_done' then
  return redis.call('LPOP', P .. 'children_done')
elseif what == 'fault' then
  return redis.call('HSET', P .. 'faults', ARGV[3], ARGV[4])
elseif what == 'clear_faults' then
  return redis.call('DEL', P .. 'faults')
end
return redis.error_reply('indexes.lua: unknown request ' .. tostring(what))
