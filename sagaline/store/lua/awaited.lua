-- Recovery of a compensating saga whose awaited action lost its worker: its outcome is
-- unknown, so its compensation becomes due (compensations undo nothing when there is
-- nothing to undo). ARGV[5..]: step. Returns 1 if it was awaited.
local c = 'compensation:' .. ARGV[5] .. ':status'
if redis.call('HGET', STEPS, c) ~= 'awaiting' then return 0 end
redis.call('HSET', STEPS, c, 'pending')
log({at = now_s(), event = 'compensation.due', step = ARGV[5],
     reason = 'its action was in flight when its worker was lost'})
return 1
