-- Move a saga in the recovery sweep's indexes, from outside a transition.
-- ARGV[5..]: what: 'later' (look again after the hand-off time: a saga this engine cannot
-- define), 'now' (look at the next sweep: an operator resumes it), or 'no_deadline' (drop
-- it from the deadline index: it was past its deadline but no longer running).
-- Returns 1 when the saga was in the index, else 0 (then nothing changed).
local what = ARGV[5]
if what == 'no_deadline' then
  return redis.call('ZREM', P .. 'index:deadline', ID)
end
if not redis.call('ZSCORE', ACTIVE, ID) then return 0 end
local at = 0
if what == 'later' then at = now_s() + HANDOFF_S end
redis.call('ZADD', ACTIVE, at, ID)
return 1
