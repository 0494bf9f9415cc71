package store

import "github.com/redis/go-redis/v9"

// Every mutation of a schedule is one Lua script, so that it is atomic even
// with many API, scheduler and worker replicas. Each script touches the keys
// of one partition only (one Redis Cluster slot). Scripts that find schedule
// IDs in a ZSET build the schedule keys from a prefix passed in ARGV, as the
// keys of one partition share a hash tag.
//
// Every time decision uses Redis TIME (nowMS below), the one clock shared by
// all replicas, so replicas with skewed clocks neither fire twice nor skip.
// Writes after TIME need script effects replication, the default since Redis
// 5.0.

// luaNow defines nowMS(), the Redis server time in Unix milliseconds.
const luaNow = `
local function nowMS()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
`

// createScript stores a new active schedule and puts it in the due set.
//
// KEYS[1] schedule hash, KEYS[2] spec string, KEYS[3] due zset
// ARGV[1] schedule ID, ARGV[2] owner ats_code, ARGV[3] interval in ms,
// ARGV[4] "1" to make the first slot the creation time instead of one
// interval later, ARGV[5] encoded spec
// Returns {"ok", created ms, first slot ms} or {"exists"}.
// Cost: O(log n) in the size of the due set.
var createScript = redis.NewScript(luaNow + `
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {'exists'}
end

local now = nowMS()
local first = now
if ARGV[4] ~= '1' then
  first = now + tonumber(ARGV[3])
end

redis.call('HSET', KEYS[1],
  'ats', ARGV[2], 'st', 'active', 'iv', ARGV[3], 'an', now, 'nx', first,
  'gen', 1, 'ca', now, 'ua', now)
redis.call('SET', KEYS[2], ARGV[5])
redis.call('ZADD', KEYS[3], first, ARGV[1])
return {'ok', now, first}
`)

// setStateScript moves a schedule to another state: pause, resume or
// soft delete.
//
// KEYS[1] schedule hash, KEYS[2] spec string, KEYS[3] due zset
// ARGV[1] schedule ID, ARGV[2] owner ats_code or "" for any owner,
// ARGV[3] target state, ARGV[4] retention of a deleted schedule in ms
// Returns {"ok", 1} after a change, {"ok", 0} when the schedule already was in
// the target state, {"not_found"} when it does not exist or has another
// owner, {"deleted"} when a deleted schedule would be paused or resumed.
// Cost: O(log n) in the size of the due set.
//
// Resume puts the next slot at the first grid slot after now, so the slots
// missed while paused never run. Every change bumps the generation, so that
// workers drop the tasks enqueued before it.
var setStateScript = redis.NewScript(luaNow + `
local f = redis.call('HMGET', KEYS[1], 'st', 'ats', 'iv', 'an')
if not f[1] then
  return {'not_found'}
end
if ARGV[2] ~= '' and f[2] ~= ARGV[2] then
  return {'not_found'}
end

local state, target = f[1], ARGV[3]
if state == target then
  return {'ok', 0}
end
if state == 'deleted' then
  return {'deleted'}
end

local now = nowMS()
if target == 'active' then
  local iv, anchor = tonumber(f[3]), tonumber(f[4])
  local nextSlot = anchor
  if now >= anchor then
    nextSlot = anchor + (math.floor((now - anchor) / iv) + 1) * iv
  end
  redis.call('ZADD', KEYS[3], nextSlot, ARGV[1])
  redis.call('HSET', KEYS[1], 'st', 'active', 'nx', nextSlot, 'ua', now)
else
  redis.call('ZREM', KEYS[3], ARGV[1])
  redis.call('HDEL', KEYS[1], 'nx')
  redis.call('HSET', KEYS[1], 'st', target, 'ua', now)
  if target == 'deleted' then
    redis.call('PEXPIRE', KEYS[1], ARGV[4])
    redis.call('PEXPIRE', KEYS[2], ARGV[4])
  end
end
redis.call('HINCRBY', KEYS[1], 'gen', 1)
return {'ok', 1}
`)

// claimScript claims the due slots of one partition: for each schedule whose
// next slot is due, it moves the schedule to its next grid slot and records
// the claimed slot as in flight with a lease, in one atomic step.
//
// When a schedule is late by more than one interval (every scheduler was
// down), only the latest due slot of its grid is claimed, and the earlier
// missed ones are returned as skipped.
//
// KEYS[1] due zset, KEYS[2] inflight zset
// ARGV[1] schedule key prefix, ARGV[2] maximum number of schedules to claim,
// ARGV[3] claim lease in ms
// Returns {now ms, earliest remaining due score or -1, then per claimed slot:
// schedule ID, slot ms, generation, skipped slot count}.
// Cost: O(m log n) for m claimed schedules in a due set of n.
var claimScript = redis.NewScript(luaNow + `
local now = nowMS()
local lease = tonumber(ARGV[3])
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[2]))

local out = {now, -1}
for i = 1, #due, 2 do
  local id, score = due[i], tonumber(due[i + 1])
  local key = ARGV[1] .. id
  local f = redis.call('HMGET', key, 'st', 'iv', 'an', 'gen')
  if f[1] ~= 'active' or not f[2] then
    -- Only active schedules belong in the due set.
    redis.call('ZREM', KEYS[1], id)
  else
    local iv, anchor = tonumber(f[2]), tonumber(f[3])
    local slot = anchor + math.floor((now - anchor) / iv) * iv
    if slot < score then
      slot = score
    end
    local skipped = math.floor((slot - score) / iv)
    local nextSlot = slot + iv

    redis.call('ZADD', KEYS[1], nextSlot, id)
    redis.call('HSET', key, 'nx', nextSlot)
    redis.call('ZADD', KEYS[2], now + lease, id .. '|' .. string.format('%d', slot) .. '|' .. f[4])

    out[#out + 1] = id
    out[#out + 1] = slot
    out[#out + 1] = f[4]
    out[#out + 1] = skipped
  end
end

local head = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if #head > 0 then
  out[2] = tonumber(head[2])
end
return out
`)

// reclaimScript takes over in-flight slots whose lease has ended, because the
// scheduler that claimed them stopped before it confirmed their enqueue. It
// renews their lease for the caller, so that one replica re-enqueues them.
//
// KEYS[1] inflight zset
// ARGV[1] new lease in ms, ARGV[2] maximum number of slots
// Returns the members taken over ("<id>|<slot ms>|<gen>").
// Cost: O(m log n) for m expired members.
var reclaimScript = redis.NewScript(luaNow + `
local now = nowMS()
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
for _, member in ipairs(expired) do
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), member)
end
return expired
`)

// startScript decides whether a worker may run a slot's task, and if so
// records the execution as started and takes the schedule's running marker.
//
// KEYS[1] schedule hash, KEYS[2] spec string
// ARGV[1] slot ms, ARGV[2] generation of the task, ARGV[3] execution ID,
// ARGV[4] attempt (0 first), ARGV[5] running marker lease in ms
// Returns {"ok", owner ats_code, spec, now ms} or a one-element verdict:
// "missing", "paused", "deleted", "stale_generation" (the schedule changed
// since the slot was claimed), "stale_slot" (a later slot already started),
// "duplicate" (this slot already ran to an end), "busy" (this attempt is
// still running elsewhere; try again later) or "overlap" (an earlier slot's
// execution still holds the running marker).
// Cost: O(1).
var startScript = redis.NewScript(luaNow + `
local f = redis.call('HMGET', KEYS[1], 'st', 'gen', 'ls', 'lx', 'la', 'lo', 'rx', 'ra', 'ru', 'ats')
if not f[1] then
  return {'missing'}
end
if f[1] ~= 'active' then
  return {f[1]}
end
if f[2] ~= ARGV[2] then
  return {'stale_generation'}
end

local slot, attempt, exec = tonumber(ARGV[1]), tonumber(ARGV[4]), ARGV[3]
local lastSlot = tonumber(f[3] or '0')
if slot < lastSlot then
  return {'stale_slot'}
end

local now = nowMS()
local markerLive = f[7] and tonumber(f[9] or '0') > now

-- The same slot again is a retry (a higher attempt), a redelivery after the
-- worker stopped, or a duplicate delivery.
if slot == lastSlot and f[4] == exec then
  local lastAttempt, status = tonumber(f[5] or '0'), f[6]
  if status == 'succeeded' or status == 'failed' then
    return {'duplicate'}
  end
  if attempt < lastAttempt or (attempt == lastAttempt and status == 'retrying') then
    return {'duplicate'}
  end
  if attempt == lastAttempt and status == 'running' and markerLive then
    return {'busy'}
  end
elseif markerLive then
  return {'overlap'}
end

redis.call('HSET', KEYS[1], 'ls', ARGV[1], 'lx', exec, 'la', ARGV[4], 'lo', 'running',
  'rx', exec, 'ra', ARGV[4], 'ru', now + tonumber(ARGV[5]))
return {'ok', f[10], redis.call('GET', KEYS[2]) or '', now}
`)

// finishScript records the outcome of one attempt of an execution and
// releases the running marker if that attempt holds it. The outcome is
// recorded only if the attempt is still the schedule's latest one, so the
// record never moves backwards.
//
// KEYS[1] schedule hash
// ARGV[1] execution ID, ARGV[2] ExecutionStatus, ARGV[3] attempt
// Returns 1 when the outcome was recorded, else 0.
// Cost: O(1).
var finishScript = redis.NewScript(`
local f = redis.call('HMGET', KEYS[1], 'lx', 'la', 'rx', 'ra')
if f[3] == ARGV[1] and f[4] == ARGV[3] then
  redis.call('HDEL', KEYS[1], 'rx', 'ra', 'ru')
end
if f[1] == ARGV[1] and f[2] == ARGV[3] then
  redis.call('HSET', KEYS[1], 'lo', ARGV[2])
  return 1
end
return 0
`)
