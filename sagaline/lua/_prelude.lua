-- Shared helpers, prepended to every script. KEYS[1] is the saga hash, KEYS[2] the step
-- hash, KEYS[3] the transition log; ARGV[1] is the key prefix and ARGV[2] the saga id.
local P = ARGV[1]
local ID = ARGV[2]
local SAGA, STEPS, LOG = KEYS[1], KEYS[2], KEYS[3]

local function now_s()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end

local function fmt(t)
  return string.format('%.6f', t)
end

local function log(entry)
  redis.call('RPUSH', LOG, cjson.encode(entry))
end

local function move_status(old, new, at)
  redis.call('HSET', SAGA, 'status', new, 'updated_at', fmt(at))
  redis.call('ZREM', P .. 'index:status:' .. old, ID)
  redis.call('ZADD', P .. 'index:status:' .. new, at, ID)
end

-- Put the saga in a final state: index it, stamp it, schedule its expiry, wake waiters.
local function conclude(old, final, at, retention_s, extra)
  move_status(old, final, at)
  redis.call('HSET', SAGA, 'ended_at', fmt(at))
  redis.call('ZREM', P .. 'index:active', ID)
  local entry = {at = at, event = 'saga.' .. final}
  if extra then for k, v in pairs(extra) do entry[k] = v end end
  log(entry)
  if retention_s > 0 then
    redis.call('EXPIRE', SAGA, retention_s)
    redis.call('EXPIRE', STEPS, retention_s)
    redis.call('EXPIRE', LOG, retention_s)
  end
  redis.call('PUBLISH', P .. 'saga:' .. ID .. ':done', final)
end

local function decode_list(raw)
  if not raw or raw == '' then return {} end
  return cjson.decode(raw)
end

-- After a compensation reached a final state: if every planned compensation has, the saga
-- ends compensated (all undone) or compensation_failed (some effect is left in place).
local function maybe_conclude_compensation(at, retention_s)
  if redis.call('HGET', SAGA, 'status') ~= 'compensating' then return false end
  local plan = decode_list(redis.call('HGET', SAGA, 'compensation_plan'))
  local failed = {}
  for _, name in ipairs(plan) do
    local s = redis.call('HGET', STEPS, 'compensation:' .. name .. ':status')
    if s == 'failed' then
      table.insert(failed, name)
    elseif s ~= 'completed' then
      return false
    end
  end
  if #failed > 0 then
    conclude('compensating', 'compensation_failed', at, retention_s, {undone = failed})
  else
    conclude('compensating', 'compensated', at, retention_s, nil)
  end
  return true
end
