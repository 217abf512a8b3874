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

-- Append to the transition log, which is also the saga's event outbox: the saga stays in
-- index:outbox until every entry has been published (outbox.lua).
local function log(entry)
  redis.call('RPUSH', LOG, cjson.encode(entry))
  redis.call('ZADD', P .. 'index:outbox', 'NX', entry.at, ID)
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
  -- A child saga's end continues its parent: whoever drains this list delivers it.
  local parent = redis.call('HGET', SAGA, 'parent_id')
  if parent and parent ~= '' then redis.call('RPUSH', P .. 'children_done', ID) end
  if RETENTION_S > 0 then
    redis.call('EXPIRE', SAGA, RETENTION_S)
    redis.call('EXPIRE', STEPS, RETENTION_S)
    redis.call('EXPIRE', LOG, RETENTION_S)
    local cid = redis.call('HGET', SAGA, 'correlation_id')
    if cid then redis.call('EXPIRE', P .. 'index:correlation:' .. cid, RETENTION_S) end
    local key = redis.call('HGET', SAGA, 'idempotency_key')
    if key and key ~= '' then redis.call('EXPIRE', P .. 'idempotency:' .. key, RETENTION_S) end
  end
  redis.call('PUBLISH', P .. 'saga:' .. ID .. ':done', final)
end

-- Keep a compensation that gave up where an operator sees it (``sagaline dead-letters``).
local function dead_letter(step, error, attempts, at)
  redis.call('HSET', P .. 'dead_letters', ID .. ':' .. step, cjson.encode({
    saga_id = ID, saga = redis.call('HGET', SAGA, 'name'), step = step,
    error = error, attempts = attempts, at = at}))
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

-- Plan the rollback of a saga turning to compensating: completed steps with a compensation,
-- last first, and a step still in flight (its action running) awaited, since it may
-- complete after all. Branches of one group form one stage, whose compensations run in
-- parallel; every other step is a stage of its own. A step whose fallback ran is undone by
-- the fallback's compensation (its 'via' is 'fallback'). steps_json holds, in forward order,
-- [name, has_compensation, group ('' none), fallback ('' none, 'undo', 'keep'), pivot].
local function plan_rollback(steps_json, at)
  local steps = cjson.decode(steps_json)
  local plan, stages = {}, {}
  local awaiting = '0'
  local last_group = ''
  for i = #steps, 1, -1 do
    local name, has_compensation = steps[i][1], steps[i][2]
    local group, fallback = steps[i][3] or '', steps[i][4] or ''
    local st = redis.call('HGET', STEPS, 'action:' .. name .. ':status')
    local via = 'action'
    if fallback ~= '' and st == 'failed' then
      via = 'fallback'
      st = redis.call('HGET', STEPS, 'fallback:' .. name .. ':status')
      has_compensation = fallback == 'undo'
    end
    if via == 'action' and st == 'failed'
        and redis.call('HGET', STEPS, 'action:' .. name .. ':in_doubt') == '1' then
      -- Failed with its outcome unknown (its process died mid-step): undo it as completed
      -- (a compensation undoes nothing when there is nothing to undo).
      st = 'completed'
    end
    local f = 'compensation:' .. name .. ':'
    local signal = redis.call('HGET', STEPS, 'action:' .. name .. ':signal')
    if st == 'waiting' and signal then
      -- It waits for a signal: it did not run to its end, so there is nothing to undo.
      local stopped = {type = 'sagaline.errors.SagaCancelledError', step = name,
                       message = 'the saga stopped while ' .. name .. ' waited for signal '
                                 .. signal, retryable = false}
      redis.call('HSET', STEPS, 'action:' .. name .. ':status', 'failed',
                 'action:' .. name .. ':error', cjson.encode(stopped),
                 'action:' .. name .. ':ended_at', fmt(at))
      log({at = at, event = 'action.failed', step = name, error = stopped})
      st = 'failed'
    elseif st == 'waiting' then
      st = 'running'  -- its child saga still runs
    end
    if st == 'completed' or st == 'running' then
      if has_compensation then
        table.insert(plan, name)
        if group ~= '' and group == last_group then
          table.insert(stages[#stages], name)
        else
          table.insert(stages, {name})
        end
        last_group = group
        if st == 'completed' then
          redis.call('HSET', STEPS, f .. 'status', 'pending')
        else
          redis.call('HSET', STEPS, f .. 'status', 'awaiting')
          awaiting = '1'
        end
        if via == 'fallback' then redis.call('HSET', STEPS, f .. 'via', 'fallback') end
      elseif st == 'completed' then
        log({at = at, event = 'compensation.skipped', step = name,
             reason = 'the step declares no compensation'})
      end
    end
  end
  local encoded = '[]'
  if #stages > 0 then encoded = cjson.encode(stages) end
  redis.call('HSET', SAGA, 'compensation_plan', encode_list(plan), 'compensation_stages',
             encoded, 'waiting_on', '')
  return plan, awaiting
end

-- The pivot of steps_json (as plan_rollback reads it) that completed or is running, if any:
-- past it, the saga cannot be rolled back.
local function pivot_passed(steps_json)
  for _, row in ipairs(cjson.decode(steps_json)) do
    if row[5] == true then
      local st = redis.call('HGET', STEPS, 'action:' .. row[1] .. ':status')
      if st == 'failed' and (row[4] or '') ~= '' then
        -- Its fallback stands in for it: a pivot completed by its fallback is passed too.
        st = redis.call('HGET', STEPS, 'fallback:' .. row[1] .. ':status') or st
      end
      if st == 'completed' or st == 'running' then return row[1] end
    end
  end
  return nil
end

-- What a group may start now. spec: {name, branches, limit (0: no bound)}. Pending branches
-- are marked queued while fewer than limit are in flight (queued, running or retrying);
-- with force, the branches in flight are returned too (the recovery sweep re-sends them).
-- Returns the branches to enqueue, and whether every branch completed.
local function fill_group(spec, force, at)
  local done, inflight, failed = 0, 0, false
  local pending, out = {}, {}
  for _, b in ipairs(spec.branches) do
    local st = redis.call('HGET', STEPS, 'action:' .. b .. ':status')
    if st == 'completed' then
      done = done + 1
    elseif not st or st == 'pending' then
      table.insert(pending, b)
    elseif st == 'failed' then
      failed = true
    else
      inflight = inflight + 1
      if force then table.insert(out, b) end
    end
  end
  if failed then return {}, false end
  local free = #pending
  if spec.limit > 0 then free = math.min(free, spec.limit - inflight) end
  for i = 1, free do
    redis.call('HSET', STEPS, 'action:' .. pending[i] .. ':status', 'queued')
    log({at = at, event = 'action.queued', step = pending[i], group = spec.name})
    table.insert(out, pending[i])
  end
  return out, done == #spec.branches
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
