-- The compensations to enqueue now: those of the first stage of the rollback that has any
-- left (a stage is one step, or the branches of one group, undone in parallel). Each one
-- returned is marked queued, so two callers never both enqueue it; one awaiting its action
-- waits. ARGV[5..]: force ('1': also return those queued or running, which the recovery
-- sweep re-sends). Returns {name, via, name, via, ...} (via: 'action' or 'fallback').
if redis.call('HGET', SAGA, 'status') ~= 'compensating' then return {} end
local stages = decode_list(redis.call('HGET', SAGA, 'compensation_stages'))
if #stages == 0 then
  for _, name in ipairs(decode_list(redis.call('HGET', SAGA, 'compensation_plan'))) do
    table.insert(stages, {name})
  end
end
local force = ARGV[5] == '1'
for _, stage in ipairs(stages) do
  local open, out = false, {}
  for _, name in ipairs(stage) do
    local f = 'compensation:' .. name .. ':'
    local st = redis.call('HGET', STEPS, f .. 'status')
    if not FINAL[st] then
      open = true
      if st == 'pending' or (force and st ~= 'awaiting') then
        if st == 'pending' then redis.call('HSET', STEPS, f .. 'status', 'queued') end
        table.insert(out, name)
        table.insert(out, redis.call('HGET', STEPS, f .. 'via') or 'action')
      end
    end
  end
  if open then return out end
end
return {}
