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

// luaPause defines pause(), which takes an active schedule out of the due set
// and into the paused set. Its callers bump the generation.
const luaPause = `
local function pause(hash, due, paused, id, now)
  redis.call('ZREM', due, id)
  redis.call('SADD', paused, id)
  redis.call('HDEL', hash, 'nx', 'bf', 'bu')
  redis.call('HSET', hash, 'st', 'paused', 'ua', now)
end
`

// createScript stores a new active schedule and puts it in the due set.
//
// KEYS[1] schedule hash, KEYS[2] spec string, KEYS[3] due zset,
// KEYS[4] owners hash
// ARGV[1] schedule ID, ARGV[2] owner ats_code, ARGV[3] interval ms,
// ARGV[4] first slot mode: "next" (one interval after now), "now" (now) or
// "at" (the anchor in ARGV[6], or now if that has passed), ARGV[5] encoded
// spec, ARGV[6] anchor ms for mode "at", ARGV[7] timeout ms,
// ARGV[8] max retries, ARGV[9] misfire policy, ARGV[10] misfire window ms,
// ARGV[11] overlap policy, ARGV[12] pause after failures.
// Policies equal to their default and zero counts are not stored.
// Returns {"ok", created ms, anchor ms, first slot ms} or {"exists"}.
// Cost: O(log n) in the size of the due set.
var createScript = redis.NewScript(luaNow + `
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {'exists'}
end

local now = nowMS()
local iv = tonumber(ARGV[3])
local anchor, first = now, now + iv
if ARGV[4] == 'now' then
  first = now
elseif ARGV[4] == 'at' then
  anchor = math.max(tonumber(ARGV[6]), now)
  first = anchor
end

redis.call('HSET', KEYS[1],
  'ats', ARGV[2], 'st', 'active', 'iv', ARGV[3], 'an', anchor, 'nx', first,
  'gen', 1, 'ca', now, 'ua', now, 'to', ARGV[7], 'mr', ARGV[8])
if ARGV[9] ~= '' and ARGV[9] ~= 'run_latest' then
  redis.call('HSET', KEYS[1], 'mp', ARGV[9])
end
if ARGV[10] ~= '0' then
  redis.call('HSET', KEYS[1], 'mw', ARGV[10])
end
if ARGV[11] ~= '' and ARGV[11] ~= 'skip' then
  redis.call('HSET', KEYS[1], 'op', ARGV[11])
end
if ARGV[12] ~= '0' then
  redis.call('HSET', KEYS[1], 'pf', ARGV[12])
end
redis.call('SET', KEYS[2], ARGV[5])
redis.call('ZADD', KEYS[3], first, ARGV[1])
redis.call('HINCRBY', KEYS[4], ARGV[2], 1)
return {'ok', now, anchor, first}
`)

// setStateScript moves a schedule to another state: pause, resume or
// soft delete.
//
// KEYS[1] schedule hash, KEYS[2] spec string, KEYS[3] due zset,
// KEYS[4] paused set, KEYS[5] deleted zset, KEYS[6] owners hash,
// KEYS[7] error string
// ARGV[1] schedule ID, ARGV[2] owner ats_code or "" for any owner,
// ARGV[3] target state, ARGV[4] retention of a deleted schedule in ms
// Returns {"ok", 1} after a change, {"ok", 0} when the schedule already was in
// the target state, {"not_found"} when it does not exist or has another
// owner, {"deleted"} when a deleted schedule would be paused or resumed.
// Cost: O(log n) in the size of the due set.
//
// Resume puts the next slot at the first grid slot after now, so the slots
// missed while paused never run, and clears the failure count of a schedule
// that Pulse paused after failures. Every change bumps the generation, so
// that workers drop the tasks enqueued before it.
var setStateScript = redis.NewScript(luaNow + luaPause + `
local f = redis.call('HMGET', KEYS[1], 'st', 'ats', 'iv', 'an', 'pr')
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
  redis.call('SREM', KEYS[4], ARGV[1])
  redis.call('ZADD', KEYS[3], nextSlot, ARGV[1])
  redis.call('HSET', KEYS[1], 'st', 'active', 'nx', nextSlot, 'ua', now)
  if f[5] then
    redis.call('HDEL', KEYS[1], 'pr', 'cf')
  end
elseif target == 'paused' then
  pause(KEYS[1], KEYS[3], KEYS[4], ARGV[1], now)
else
  local retention = tonumber(ARGV[4])
  redis.call('ZREM', KEYS[3], ARGV[1])
  redis.call('SREM', KEYS[4], ARGV[1])
  redis.call('ZADD', KEYS[5], now + retention, ARGV[1])
  if redis.call('HINCRBY', KEYS[6], f[2], -1) <= 0 then
    redis.call('HDEL', KEYS[6], f[2])
  end
  redis.call('HDEL', KEYS[1], 'nx', 'bf', 'bu', 'pr')
  redis.call('HSET', KEYS[1], 'st', 'deleted', 'ua', now)
  redis.call('PEXPIRE', KEYS[1], retention)
  redis.call('PEXPIRE', KEYS[2], retention)
  redis.call('PEXPIRE', KEYS[7], retention)
end
redis.call('HINCRBY', KEYS[1], 'gen', 1)
return {'ok', 1}
`)

// claimScript claims the due slots of one partition: for each schedule whose
// next slot is due, it moves the schedule to its next grid slot and records
// the claimed slots as in flight with a lease, in one atomic step.
//
// A schedule's slots are claimed in order: while an earlier claim of the
// schedule is still in flight (its scheduler died before the enqueue, and
// the reclaim pass has not enqueued it yet), the schedule waits, so the
// late slot runs before any later one.
//
// When a schedule is late by more than one interval (every scheduler was
// down), its misfire policy decides: run_latest claims the latest due slot
// and skips the earlier ones; skip claims nothing and skips them all;
// run_all claims every missed slot in the misfire window as one range of
// consecutive slots, which a worker runs in order, and skips the older ones.
//
// The due score of a schedule is the time to look at it again: its next slot
// ("nx" in the hash), or later while an earlier claim is in flight.
//
// KEYS[1] due zset, KEYS[2] inflight zset, and KEYS[3], the partition's
// lease hash, only when the caller claims as the lease holder
// ARGV[1] schedule key prefix, ARGV[2] maximum number of schedules to claim,
// ARGV[3] claim lease in ms, ARGV[4] maximum slots in one range, ARGV[5] the
// caller's fencing token when KEYS[3] is given
// Returns {now ms, earliest remaining due score or -1, then per schedule:
// ID, first claimed slot ms (0 when none), generation, skipped slot count,
// claimed slot count, interval ms, timeout ms, max retries}, or {now ms, -2}
// without claiming anything when the lease's token is not the caller's.
// Cost: O(m log n) for m claimed schedules in a due set of n.
var claimScript = redis.NewScript(luaNow + `
local now = nowMS()
if KEYS[3] and redis.call('HGET', KEYS[3], 'token') ~= ARGV[5] then
  -- Fenced: another scheduler acquired the partition's lease since.
  return {now, -2}
end
local lease = tonumber(ARGV[3])
local rangeMax = tonumber(ARGV[4])
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[2]))

local out = {now, -1}
for i = 1, #due, 2 do
  local id, score = due[i], tonumber(due[i + 1])
  local key = ARGV[1] .. id
  local f = redis.call('HMGET', key, 'st', 'iv', 'an', 'gen', 'mp', 'mw', 'to', 'mr', 'nx', 'im')
  local pending = f[10] and redis.call('ZSCORE', KEYS[2], f[10])
  if f[1] ~= 'active' or not f[2] then
    -- Only active schedules belong in the due set.
    redis.call('ZREM', KEYS[1], id)
  elseif pending then
    -- Look again soon: the claim ends with its acknowledgement, or with
    -- the reclaim pass of another scheduler once its lease has ended.
    redis.call('ZADD', KEYS[1], now + 250, id)
  else
    local iv, anchor = tonumber(f[2]), tonumber(f[3])
    local nextSlot = tonumber(f[9] or score)
    local latest = anchor + math.floor((now - anchor) / iv) * iv
    if latest < nextSlot then
      -- Not due yet: the score was a wake-up time before the next slot.
      redis.call('ZADD', KEYS[1], nextSlot, id)
    else
      local missed = math.floor((latest - nextSlot) / iv)
      local first, count, skipped = latest, 1, missed
      if missed > 0 and f[5] == 'skip' then
        first, count, skipped = 0, 0, missed + 1
      elseif missed > 0 and f[5] == 'run_all' then
        local window = tonumber(f[6] or '3600000')
        local oldest = math.max(latest - math.floor(window / iv) * iv, nextSlot)
        count = math.floor((latest - oldest) / iv) + 1
        if count > rangeMax then
          count = rangeMax
        end
        first = latest - (count - 1) * iv
        skipped = math.floor((first - nextSlot) / iv)
      end

      local after = latest + iv
      redis.call('ZADD', KEYS[1], after, id)
      redis.call('HSET', key, 'nx', after)
      if skipped > 0 then
        redis.call('HINCRBY', key, 'sk', skipped)
      end
      if count > 0 then
        local member = id .. '|' .. string.format('%d', first) .. '|' .. f[4] .. '|' .. count
        redis.call('ZADD', KEYS[2], now + lease, member)
        redis.call('HSET', key, 'im', member)
      elseif f[10] then
        redis.call('HDEL', key, 'im')
      end

      local n = #out
      out[n + 1] = id
      out[n + 2] = first
      out[n + 3] = f[4]
      out[n + 4] = skipped
      out[n + 5] = count
      out[n + 6] = iv
      out[n + 7] = f[7] or '0'
      out[n + 8] = f[8] or '0'
    end
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
// ARGV[1] new lease in ms, ARGV[2] maximum number of members,
// ARGV[3] schedule key prefix
// Returns per member taken over: the member, then the schedule's interval
// ms, timeout ms and max retries ("0" each when the schedule is gone).
// Cost: O(m log n) for m expired members.
var reclaimScript = redis.NewScript(luaNow + `
local now = nowMS()
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for _, member in ipairs(expired) do
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), member)
  local id = string.match(member, '^[^|]+')
  local f = redis.call('HMGET', ARGV[3] .. (id or ''), 'iv', 'to', 'mr')
  local n = #out
  out[n + 1] = member
  out[n + 2] = f[1] or '0'
  out[n + 3] = f[2] or '0'
  out[n + 4] = f[3] or '0'
end
return out
`)

// startScript decides whether a worker may run a slot's task, and if so
// records the execution as started and takes the schedule's running marker.
//
// KEYS[1] schedule hash, KEYS[2] spec string
// ARGV[1] slot ms, ARGV[2] generation of the task, ARGV[3] execution ID,
// ARGV[4] attempt (0 first), ARGV[5] running marker lease in ms,
// ARGV[6] execution ID of the previous slot of the same range, which may
// hand the running marker over, or ""
// Returns {"ok", owner ats_code, spec, now ms} or a one-element verdict:
// "missing", "paused", "deleted", "stale_generation" (the schedule changed
// since the slot was claimed), "stale_slot" (a later slot already started),
// "duplicate" (this slot already ran to an end), "busy" (try again later:
// this attempt still runs elsewhere, or under overlap buffer_one the slot
// waits for the running one or for an earlier buffered one) or "overlap"
// (skip: an earlier slot's execution still holds the running marker).
// Cost: O(1).
var startScript = redis.NewScript(luaNow + `
-- ulidMS returns the time part of a ULID: the slot of an execution ID.
local function ulidMS(id)
  local ms = 0
  for i = 1, 10 do
    ms = ms * 32 + string.find('0123456789ABCDEFGHJKMNPQRSTVWXYZ', string.sub(id, i, i), 1, true) - 1
  end
  return ms
end

local f = redis.call('HMGET', KEYS[1], 'st', 'gen', 'ls', 'lx', 'la', 'lo', 'rx', 'ra', 'ru', 'ats', 'op', 'bf', 'bu')
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
local newSlot = true
if slot == lastSlot and f[4] == exec then
  newSlot = false
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
elseif markerLive and f[7] ~= ARGV[6] then
  local policy = f[11] or 'skip'
  if policy == 'buffer_one' then
    local bufferLive = f[12] and tonumber(f[13] or '0') > now
    if not bufferLive or f[12] == exec then
      redis.call('HSET', KEYS[1], 'bf', exec, 'bu', now + tonumber(ARGV[5]))
      return {'busy'}
    end
    redis.call('HINCRBY', KEYS[1], 'sk', 1)
    return {'overlap'}
  elseif policy ~= 'allow' then
    redis.call('HINCRBY', KEYS[1], 'sk', 1)
    return {'overlap'}
  end
elseif not markerLive and f[12] and f[12] ~= exec and tonumber(f[13] or '0') > now
    and slot > ulidMS(f[12]) then
  -- Under buffer_one the buffered slot runs before any later one, also
  -- when the later one comes before the buffered one's redelivery.
  return {'busy'}
end

if f[12] == exec then
  redis.call('HDEL', KEYS[1], 'bf', 'bu')
end
if newSlot then
  redis.call('HINCRBY', KEYS[1], 'tr', 1)
end
redis.call('HSET', KEYS[1], 'ls', ARGV[1], 'lx', exec, 'la', ARGV[4], 'lo', 'running',
  'rx', exec, 'ra', ARGV[4], 'ru', now + tonumber(ARGV[5]))
return {'ok', f[10], redis.call('GET', KEYS[2]) or '', now}
`)

// finishScript records the outcome of one attempt of an execution and
// releases the running marker if that attempt holds it. The outcome is
// recorded only if the attempt is still the schedule's latest one, so the
// record never moves backwards. A failed execution that reaches the
// schedule's pause-after-failures count pauses the schedule.
//
// KEYS[1] schedule hash, KEYS[2] error string, KEYS[3] due zset,
// KEYS[4] paused set
// ARGV[1] schedule ID, ARGV[2] execution ID, ARGV[3] ExecutionStatus,
// ARGV[4] attempt, ARGV[5] "1" to keep the running marker for the next slot
// of a range, ARGV[6] error of a failed attempt
// Returns {recorded (1 or 0), paused by this call (1 or 0)}.
// Cost: O(log n) in the size of the due set.
var finishScript = redis.NewScript(luaNow + luaPause + `
local f = redis.call('HMGET', KEYS[1], 'lx', 'la', 'rx', 'ra', 'st', 'pf')
if f[3] == ARGV[2] and f[4] == ARGV[4] and ARGV[5] ~= '1' then
  redis.call('HDEL', KEYS[1], 'rx', 'ra', 'ru')
end
if f[1] ~= ARGV[2] or f[2] ~= ARGV[4] then
  return {0, 0}
end

local status = ARGV[3]
redis.call('HSET', KEYS[1], 'lo', status)
if status == 'succeeded' then
  redis.call('HDEL', KEYS[1], 'cf')
  redis.call('DEL', KEYS[2])
  return {1, 0}
end
if status ~= 'failed' and status ~= 'retrying' then
  return {1, 0}
end

local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then
  redis.call('SET', KEYS[2], ARGV[6], 'PX', ttl)
else
  redis.call('SET', KEYS[2], ARGV[6])
end
if status == 'retrying' then
  return {1, 0}
end

local failures = redis.call('HINCRBY', KEYS[1], 'cf', 1)
local limit = tonumber(f[6] or '0')
if limit > 0 and failures >= limit and f[5] == 'active' then
  pause(KEYS[1], KEYS[3], KEYS[4], ARGV[1], nowMS())
  redis.call('HSET', KEYS[1], 'pr', 'paused after ' .. failures .. ' consecutive failed executions')
  redis.call('HINCRBY', KEYS[1], 'gen', 1)
  return {1, 1}
end
return {1, 0}
`)

// releaseScript releases the running marker if the given attempt of the
// given execution holds it.
//
// KEYS[1] schedule hash
// ARGV[1] execution ID, ARGV[2] attempt
// Returns 1 when it released the marker, else 0.
// Cost: O(1).
var releaseScript = redis.NewScript(`
local f = redis.call('HMGET', KEYS[1], 'rx', 'ra')
if f[1] == ARGV[1] and f[2] == ARGV[2] then
  redis.call('HDEL', KEYS[1], 'rx', 'ra', 'ru')
  return 1
end
return 0
`)

// maintainScript counts the overdue schedules of one partition, to make a
// silent stop visible, and removes deleted schedules whose retention ended from the deleted index.
// A schedule is overdue when it is active and its next slot is more than one
// interval in the past.
//
// KEYS[1] due zset, KEYS[2] deleted zset
// ARGV[1] schedule key prefix, ARGV[2] maximum number of candidates to check,
// ARGV[3] maximum number of IDs to return as a sample
// Returns {overdue count, 1 if the count stopped at the candidate limit else
// 0, then up to ARGV[3] overdue IDs}.
// Cost: O(log n + m) for m candidates, plus O(log d) per expired deleted
// schedule.
var maintainScript = redis.NewScript(luaNow + `
local now = nowMS()
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)

-- Every interval is at least one second, so no schedule due within the last
-- second can be overdue.
local limit = tonumber(ARGV[2])
local candidates = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - 1000, 'WITHSCORES', 'LIMIT', 0, limit)
local out = {0, 0}
if #candidates / 2 >= limit then
  out[2] = 1
end
for i = 1, #candidates, 2 do
  local iv = tonumber(redis.call('HGET', ARGV[1] .. candidates[i], 'iv') or '0')
  if iv > 0 and tonumber(candidates[i + 1]) + iv < now then
    out[1] = out[1] + 1
    if #out - 2 < tonumber(ARGV[3]) then
      out[#out + 1] = candidates[i]
    end
  end
end
return out
`)

// acquireLeaseScript acquires or renews the lease of one partition for a
// scheduler replica. A lease that ended is taken over with a new fencing
// token, one more than the last; a renewal keeps the token.
//
// KEYS[1] lease hash
// ARGV[1] replica ID, ARGV[2] lease length in ms
// Returns {1, token, end ms} when the caller holds the lease, or
// {0, holder, end ms} when another replica does.
// Cost: O(1).
var acquireLeaseScript = redis.NewScript(luaNow + `
local now = nowMS()
local f = redis.call('HMGET', KEYS[1], 'owner', 'until', 'token')
local ends = now + tonumber(ARGV[2])
if f[1] == ARGV[1] and tonumber(f[2] or '0') > now then
  redis.call('HSET', KEYS[1], 'until', ends)
  return {1, tonumber(f[3]), ends}
end
if f[1] and f[1] ~= '' and tonumber(f[2] or '0') > now then
  return {0, f[1], tonumber(f[2])}
end
local token = redis.call('HINCRBY', KEYS[1], 'token', 1)
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'until', ends)
return {1, token, ends}
`)

// releaseLeaseScript ends a partition's lease at once if the caller still
// holds it with the given token, so that the next owner need not wait for
// it to run out. The token stays, so the next acquisition gets a higher one.
//
// KEYS[1] lease hash
// ARGV[1] replica ID, ARGV[2] fencing token
// Returns 1 when the lease was released, else 0.
// Cost: O(1).
var releaseLeaseScript = redis.NewScript(`
local f = redis.call('HMGET', KEYS[1], 'owner', 'token')
if f[1] == ARGV[1] and f[2] == ARGV[2] then
  redis.call('HSET', KEYS[1], 'owner', '', 'until', 0)
  return 1
end
return 0
`)

// heartbeatScript records a scheduler replica as alive until now plus a
// time to live, removes the replicas whose time ran out, and returns the
// live ones.
//
// KEYS[1] schedulers zset
// ARGV[1] replica ID, ARGV[2] time to live in ms, ARGV[3] "1" to leave
// instead
// Returns the IDs of the live replicas, sorted.
// Cost: O(log n + m) for n replicas, m of them expired.
var heartbeatScript = redis.NewScript(luaNow + `
local now = nowMS()
if ARGV[3] == '1' then
  redis.call('ZREM', KEYS[1], ARGV[1])
else
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZRANGE', KEYS[1], 0, -1)
`)
