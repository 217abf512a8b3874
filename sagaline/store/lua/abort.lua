-- Stop a running saga from outside: cancelled by a caller, or past its deadline. No new
-- step starts; completed steps are compensated, and a step in flight is awaited.
-- ARGV[5..]: reason ('cancelled' or 'deadline'), error_json, steps_json.
-- Returns {'compensate', plan_json, awaiting} or {'noop', status} when the saga was not
-- running.
local reason, error_json = ARGV[5], ARGV[6]
local status = redis.call('HGET', SAGA, 'status')
if status ~= 'running' then return {'noop', status or 'missing'} end
-- Past a pivot there is no undoing: the saga goes on forward.
if pivot_passed(ARGV[7]) then return {'noop', 'past_pivot'} end
local now = now_s()
local intent = 'compensated'
if reason == 'cancelled' then intent = 'cancelled' end
move_status('running', 'compensating', now)
redis.call('HSET', SAGA, 'cancel_requested', '1', 'intent', intent, 'error', error_json,
           'recoveries', '0')
log({at = now, event = 'saga.' .. (reason == 'cancelled' and 'cancelling' or 'failed'),
     reason = reason, error = cjson.decode(error_json)})
local plan, awaiting = plan_rollback(ARGV[7], now)
if not maybe_conclude_compensation(now) then attention(now + HANDOFF_S) end
return {'compensate', encode_list(plan), awaiting}
