-- Shared helpers, prepended to every script. KEYS[1] is the saga hash, KEYS[2] the step
-- hash, KEYS[3] the transition log. ARGV[1] is the key prefix, ARGV[2] the saga id,
-- ARGV[3] how long a finished saga is kept (s), ARGV[4] the hand-off time (s): how long the
-- next message may take to start before the recovery sweep looks at the saga. A script's
-- own arguments start at ARGV[5].
local P = ARGV[1]
local ID = ARGV[2]
local RETENTION_S = tonumber(ARGV[3])
local HANDOFF_S = tonumber(ARGV[4])
local SAGA, STEPS, LOG = KEYS[1], KEYS[2], KEYS[3]
local ACTIVE = P .. 'index:active'
local FINAL = {completed = true, failed = true, skipped = true}
-- Every status move this script made ('old>new'), reported with its reply (see moved()).
local MOVES = {}

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

local function decode_list(raw)
  if not raw or raw == '' then return {} end
  return cjson.decode(raw)
end

local function encode_list(list)
  if #list == 0 then return '[]' end
  return cjson.encode(list)
end

-- When the recovery sweep should look at this saga if nothing else happens by then.
local function attention(at)
  local status = redis.call('HGET', SAGA, 'status')
  if status == 'running' or status == 'compensating' then
    redis.call('ZADD', ACTIVE, at, ID)
  end
end

local function move_status(old, new, at)
  redis.call('HSET', SAGA, 'status', new, 'updated_at', fmt(at))
  table.insert(MOVES, old .. '>' .. new)
  redis.call('ZREM', P .. 'index:status:' .. old, ID)
  redis.call('ZADD', P .. 'index:status:' .. new, at, ID)
end

-- Put the saga in a final state: index it, stamp it, schedule its expiry, wake waiters.
local function conclude(old, final, at, extra)
  move_status(old, final, at)
  redis.call('HSET', SAGA, 'ended_at', fmt(at))
  redis.call('ZREM', ACTIVE, ID)
  redis.call('ZREM', P .. 'index:deadline', ID)
  local entry = {at = at, event = 'saga.' .. final}
  if extra then for k, v in pairs(extra) do entry[k] = v end end
  log(entry)
  if RETENTION_S > 0 then
    redis.call('EXPIRE', SAGA, RETENTION_S)
    redis.call('EXPIRE', STEPS, RETENTION_S)
    redis.call('EXPIRE', LOG, RETENTION_S)
    local cid = redis.call('HGET', SAGA, 'correlation_id')
    if cid then redis.call('EXPIRE', P .. 'index:correlation:' .. cid, RETENTION_S) end
  end
  redis.call('PUBLISH', P .. 'saga:' .. ID .. ':done', final)
end

-- Once every planned compensation reached a final state, the saga ends: compensated (or
-- cancelled, when that was the intent) if all were undone, else compensation_failed.
local function maybe_conclude_compensation(at)
  if redis.call('HGET', SAGA, 'status') ~= 'compensating' then return false end
  local plan = decode_list(redis.call('HGET', SAGA, 'compensation_plan'))
  local failed = {}
  for _, name in ipairs(plan) do
    local s = redis.call('HGET', STEPS, 'compensation:' .. name .. ':status')
    if s == 'failed' then
      table.insert(failed, name)
    elseif not FINAL[s] then
      return false
    end
  end
  if #failed > 0 then
    conclude('compensating', 'compensation_failed', at, {undone = failed})
  else
    conclude('compensating', redis.call('HGET', SAGA, 'intent') or 'compensated', at, nil)
  end
  return true
end

-- Turn a running saga to compensating and plan the rollback: completed steps with a
-- compensation, last first, and a step still in flight (its action running) awaited first,
-- since it may complete after all. steps_json is [[name, has_compensation], ...].
local function plan_rollback(steps_json, at)
  local steps = cjson.decode(steps_json)
  local plan = {}
  local awaiting = '0'
  for i = #steps, 1, -1 do
    local name, has_compensation = steps[i][1], steps[i][2]
    local st = redis.call('HGET', STEPS, 'action:' .. name .. ':status')
    local f = 'compensation:' .. name .. ':status'
    if st == 'completed' or st == 'running' then
      if has_compensation then
        table.insert(plan, name)
        if st == 'completed' then
          redis.call('HSET', STEPS, f, 'pending')
        else
          redis.call('HSET', STEPS, f, 'awaiting')
          awaiting = '1'
        end
      elseif st == 'completed' then
        log({at = at, event = 'compensation.skipped', step = name,
             reason = 'the step declares no compensation'})
      end
    end
  end
  redis.call('HSET', SAGA, 'compensation_plan', encode_list(plan), 'waiting_on', '')
  return plan, awaiting
end

-- The store wraps every script: its reply, and when the saga's status moved, the moves and
-- what telemetry needs to announce them (read here, so no extra round trip).
local function moved(reply)
  if reply == nil then reply = false end
  if #MOVES == 0 then return {reply} end
  local info = redis.call('HMGET', SAGA, 'name', 'correlation_id', 'traceparent',
                          'trace_parent_id', 'created_at', 'updated_at', 'failed_step',
                          'error', 'intent', 'cancel_requested', 'plan')
  for i = 1, #info do if not info[i] then info[i] = '' end end
  return {reply, MOVES, info}
end
