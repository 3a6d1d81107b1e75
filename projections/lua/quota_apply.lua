-- Apply a batch of events of one stream to the quota view, and the stream position, atomically.
-- ARGV: prefix, stream, last offset of the batch, window (µs), then the batch: a JSON array
-- with one array per event (see quota_view.encode; times in µs):
--   R off tenant rid t tokens month month_end day   TokensReserved (month/day: their start)
--   S off tenant rid t charged                      ReservationSettled
--   L off tenant rid t                              ReservationReleased / ReservationExpired
--   J off tenant t                                  RequestRejected (not unknown_tenant)
--   P off tenant event_id t budget period tpm rpm max_concurrent ttl   policy (0 = unlimited)
--   N off                                           anything else: only moves the position
-- Events at or below the stored position of the stream are skipped. Returns how many were not.
-- The number of calls does not grow with the tenants of a batch, except one ZADD per tenant
-- with new reservations and two per tenant whose window has entries to drop.
local P, stream = ARGV[1], ARGV[2]
local last, W = tonumber(ARGV[3]), tonumber(ARGV[4])
local POS, Q, R, PE = P .. 'pos', P .. 'q', P .. 'r', P .. 'pe'
local pos = tonumber(redis.call('HGET', POS, stream) or '-1')
-- ARGV[6], the floor: the highest position this process saw stored; below it, the view was
-- lost (flushed) under the projection: write nothing, return -1 (see projections/view_guard.py)
local floor = tonumber(ARGV[6] or '-1')
if floor >= 0 and pos < floor then return -1 end
local CHUNK = 1000
local DAY = 86400000000

-- integers print exactly: %.14g (tostring) up to 1e14, %.0f beyond (times in µs)
local function fmt(x)
  if x < 1e14 and x > -1e14 then return tostring(x) end
  return string.format('%.0f', x)
end

-- A tenant's quota: its fields by these indices, stored as text joined by '|' (the order of
-- quota_view.QUOTA_FIELDS); policy fields are false ('' in text) until a policy is seen.
-- WMIN is the earliest admission in the tenant's window sorted set (-1 when it is empty).
local BUDGET, PERIOD, TPM, RPM, MAXC, TTL, PT, NOW, MK, MKE = 1, 2, 3, 4, 5, 6, 7, 8, 9, 10
local UM, RM, DK, UD, RD, OPENN, OPENT, REJ, WMIN = 11, 12, 13, 14, 15, 16, 17, 18, 19
local QUOTA_PATTERN = '^' .. string.rep('([^|]*)|', WMIN - 1) .. '([^|]*)$'
local function decode_quota(v)
  if not v then
    return {false, false, false, false, false, false, -1, -1, -1, -1, 0, 0, -1, 0, 0, 0, 0, 0, -1}
  end
  local q = {string.match(v, QUOTA_PATTERN)}
  for i = 1, WMIN do
    local x = q[i]
    if x == '' then q[i] = false elseif i ~= PERIOD then q[i] = tonumber(x) end
  end
  return q
end
-- the policy fields as text, then the counters and times (integers) in one format
local QUOTA_FORMAT = '%s|%s|%s|%s|%s|%s' .. string.rep('|%.0f', WMIN - TTL)
local function text(x)
  if x == false then return '' end
  if type(x) == 'string' then return x end
  return fmt(x)
end
local function encode_quota(q)
  return string.format(QUOTA_FORMAT, text(q[BUDGET]), text(q[PERIOD]), text(q[TPM]), text(q[RPM]),
    text(q[MAXC]), text(q[TTL]), q[PT], q[NOW], q[MK], q[MKE], q[UM], q[RM], q[DK], q[UD], q[RD],
    q[OPENN], q[OPENT], q[REJ], q[WMIN])
end

-- A reservation, field "tenant:request id": MessagePack {admitted at, tokens, tokens counted
-- in the window, open}; the last byte tells open (0xc3, true) from closed (0xc2, false).
local T, TOK, CNT, OPEN = 1, 2, 3, 4
local CLOSED_BYTE = 0xc2

-- a command with a fixed key and a long list of arguments, in chunks; the replies, joined
local function bulk(cmd, key, list, step)
  local out = {}
  for s = 1, #list, CHUNK * step do
    local reply = redis.call(cmd, key, unpack(list, s, math.min(s + CHUNK * step - 1, #list)))
    if type(reply) == 'table' then
      for _, x in ipairs(reply) do out[#out + 1] = x end
    end
  end
  return out
end

-- 1. the live events; the tenants and reservations they touch
local events, tids, seen_tid, keys, seen_key = {}, {}, {}, {}, {}
local applied = 0
for _, f in ipairs(cjson.decode(ARGV[5])) do
  if f[2] > pos then
    applied = applied + 1
    local kind = f[1]
    if kind ~= 'N' then
      events[#events + 1] = f
      local tid = f[3]
      if not seen_tid[tid] then seen_tid[tid] = true; tids[#tids + 1] = tid end
      if kind == 'R' or kind == 'S' or kind == 'L' then
        local key = tid .. ':' .. f[4]
        f.key = key
        if not seen_key[key] then seen_key[key] = true; keys[#keys + 1] = key end
      end
    end
  end
end

-- 2. load them
local tenants, recs = {}, {}
local values = bulk('HMGET', Q, tids, 1)
for i, tid in ipairs(tids) do
  tenants[tid] = decode_quota(values[i])
end
values = bulk('HMGET', R, keys, 1)
for i, key in ipairs(keys) do recs[key] = values[i] and cmsgpack.unpack(values[i]) or false end

-- 3. apply, in memory
local dirty, added = {}, {}
local function advance(q, t)
  if t > q[NOW] then q[NOW] = t end
end
for _, f in ipairs(events) do
  local kind, tid = f[1], f[3]
  local q = tenants[tid]
  if kind == 'R' then
    local t, tok, mk, dk = f[5], f[6], f[7], f[9]
    advance(q, t)
    if not recs[f.key] then
      if mk > q[MK] then q[MK] = mk; q[MKE] = f[8]; q[UM] = 0; q[RM] = 0 end
      if mk == q[MK] then q[RM] = q[RM] + tok end
      if dk > q[DK] then q[DK] = dk; q[UD] = 0; q[RD] = 0 end
      if dk == q[DK] then q[RD] = q[RD] + tok end
      q[OPENN] = q[OPENN] + 1
      q[OPENT] = q[OPENT] + tok
      recs[f.key] = {t, tok, tok, true}
      dirty[f.key] = true
      added[f.key] = true
    end
  elseif kind == 'S' or kind == 'L' then
    advance(q, f[5])
    local r = recs[f.key]
    if r and r[OPEN] then
      local charged, t, tok = 0, r[T], r[TOK]
      if kind == 'S' then charged = math.min(f[6], tok) end
      -- charged to the period of the reservation: counted only if that is the latest one
      if t >= q[MK] and t < q[MKE] then q[UM] = q[UM] + charged; q[RM] = q[RM] - tok end
      if t >= q[DK] and t < q[DK] + DAY then q[UD] = q[UD] + charged; q[RD] = q[RD] - tok end
      q[OPENN] = q[OPENN] - 1
      q[OPENT] = q[OPENT] - tok
      r[CNT] = charged
      r[OPEN] = false
      dirty[f.key] = true
    end
  elseif kind == 'J' then
    advance(q, f[4])
    q[REJ] = q[REJ] + 1
  elseif kind == 'P' then
    if redis.call('SADD', PE, tid .. ':' .. f[4]) == 1 then
      if f[5] > q[PT] then q[PT] = f[5] end
      q[BUDGET], q[PERIOD], q[TPM] = f[6], f[7], f[8]
      q[RPM], q[MAXC], q[TTL] = f[9], f[10], f[11]
    end
  end
end

-- 4. write back. A closed reservation that left its tenant's window (admitted at or before
-- now - window) is deleted; an open one stays until it closes.
local put, gone, zadd = {}, {}, {}
for key in pairs(dirty) do
  local r = recs[key]
  local cutoff = tenants[key:match('^([^:]*)')][NOW] - W
  if not r[OPEN] and r[T] <= cutoff then
    gone[#gone + 1] = key
  else
    put[#put + 1] = key
    put[#put + 1] = cmsgpack.pack(r)
    if added[key] and r[T] > cutoff then
      local tid = key:match('^([^:]*)')
      local z = zadd[tid]
      if not z then z = {}; zadd[tid] = z end
      z[#z + 1] = fmt(r[T])
      z[#z + 1] = key:sub(#tid + 2)
    end
  end
end
local old = {}
for _, tid in ipairs(tids) do
  local q, wk = tenants[tid], P .. 'w:' .. tid
  local z = zadd[tid]
  if z then
    bulk('ZADD', wk, z, 2)
    for j = 1, #z, 2 do
      local t = tonumber(z[j])
      if q[WMIN] < 0 or t < q[WMIN] then q[WMIN] = t end
    end
  end
  local cutoff = q[NOW] - W
  if q[WMIN] >= 0 and q[WMIN] <= cutoff then
    -- read the oldest entries until the first that stays: it is the new WMIN
    local from, n, wmin = 0, 32, -1
    repeat
      local first = redis.call('ZRANGE', wk, from, from + n - 1, 'WITHSCORES')
      for j = 1, #first, 2 do
        local t = tonumber(first[j + 1])
        if t > cutoff then wmin = t; break end
        old[#old + 1] = tid .. ':' .. first[j]
      end
      from, n = from + n, n * 4
    until wmin >= 0 or #first < 2 * (n / 4)
    q[WMIN] = wmin
    redis.call('ZREMRANGEBYSCORE', wk, '-inf', fmt(cutoff))
  end
end
-- what left the windows: closed reservations go
local unknown = {}
for _, key in ipairs(old) do
  local r = recs[key]
  if r ~= nil then
    if r and not r[OPEN] then gone[#gone + 1] = key end
  else
    unknown[#unknown + 1] = key
  end
end
values = bulk('HMGET', R, unknown, 1)
for i, key in ipairs(unknown) do
  if values[i] and string.byte(values[i], -1) == CLOSED_BYTE then gone[#gone + 1] = key end
end
bulk('HSET', R, put, 2)
bulk('HDEL', R, gone, 1)
local flat = {}
for _, tid in ipairs(tids) do
  flat[#flat + 1] = tid
  flat[#flat + 1] = encode_quota(tenants[tid])
end
bulk('HSET', Q, flat, 2)

if last > pos then redis.call('HSET', POS, stream, fmt(last)) end
return applied
