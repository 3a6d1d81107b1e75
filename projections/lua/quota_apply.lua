-- Apply a batch of events of one stream to the quota view, and the stream position, atomically.
-- ARGV: prefix, stream, last offset of the batch, window (µs), then the batch: a JSON array
-- with one array per event (see quota_view.encode; times in µs, month/day by their start):
--   R off tenant rid t tokens month month_end day   TokensReserved
--   S off tenant rid t charged            ReservationSettled
--   L off tenant rid t                    ReservationReleased / ReservationExpired
--   J off tenant t                        RequestRejected (not unknown_tenant)
--   P off tenant event_id t budget period tpm rpm max_concurrent ttl   policy (0 = unlimited)
--   N off                                 anything else: only covered by the position
-- Events at or below the stored position of the stream are skipped. Returns how many were not.
local P = ARGV[1]
local stream = ARGV[2]
local last = tonumber(ARGV[3])
local W = tonumber(ARGV[4])
local POS = P .. 'pos'
local pos = tonumber(redis.call('HGET', POS, stream) or '-1')
local CHUNK = 1000

local DAY = 86400000000
local NUMERIC = {'budget', 'tpm', 'rpm', 'maxc', 'ttl', 'pt', 'now', 'mk', 'mke', 'um', 'rm',
                 'dk', 'ud', 'rd', 'openn', 'opent', 'rej'}

-- integers print exactly: %.14g (tostring) up to 1e14, %.0f beyond (times in µs)
local function fmt(x)
  if x < 1e14 and x > -1e14 then return tostring(x) end
  return string.format('%.0f', x)
end

-- a reservation record: "admitted at (µs)|tokens|tokens counted in the window|open (1/0)"
local function parse(v)
  local t, tok, cnt, op = string.match(v, '^(%-?%d+)|(%d+)|(%d+)|(%d)$')
  return {t = tonumber(t), tok = tonumber(tok), cnt = tonumber(cnt), open = op == '1'}
end

local function unparse(r)
  return fmt(r.t) .. '|' .. fmt(r.tok) .. '|' .. fmt(r.cnt) .. (r.open and '|1' or '|0')
end

-- calls a command with a fixed head and a long list of arguments, in chunks
local function bulk(cmd, key, list, step)
  for s = 1, #list, CHUNK * step do
    redis.call(cmd, key, unpack(list, s, math.min(s + CHUNK * step - 1, #list)))
  end
end

-- 1. the live events, and the reservations they touch
local events, wanted = {}, {}
local applied = 0
for _, f in ipairs(cjson.decode(ARGV[5])) do
  if f[2] > pos then
    applied = applied + 1
    local kind = f[1]
    if kind ~= 'N' then
      events[#events + 1] = f
      if kind == 'R' or kind == 'S' or kind == 'L' then
        local w = wanted[f[3]]
        if not w then w = {}; wanted[f[3]] = w end
        w[f[4]] = true
      end
    end
  end
end

-- 2. load the tenants and the reservations touched
local tenants, order, recs, dirty, added = {}, {}, {}, {}, {}
local function tenant(tid)
  local q = tenants[tid]
  if q then return q end
  q = {pt = -1, now = -1, mk = -1, mke = -1, um = 0, rm = 0, dk = -1, ud = 0, rd = 0, openn = 0,
       opent = 0, rej = 0}
  local raw = redis.call('HGETALL', P .. 'q:' .. tid)
  q.new = #raw == 0
  for j = 1, #raw, 2 do
    if raw[j] == 'period' then q.period = raw[j + 1] else q[raw[j]] = tonumber(raw[j + 1]) end
  end
  tenants[tid] = q
  order[#order + 1] = tid
  recs[tid], dirty[tid], added[tid] = {}, {}, {}
  return q
end
for tid, w in pairs(wanted) do
  tenant(tid)
  local ids = {}
  for rid in pairs(w) do ids[#ids + 1] = rid end
  for s = 1, #ids, CHUNK do
    local chunk = {unpack(ids, s, math.min(s + CHUNK - 1, #ids))}
    local values = redis.call('HMGET', P .. 'r:' .. tid, unpack(chunk))
    for j = 1, #chunk do recs[tid][chunk[j]] = values[j] and parse(values[j]) or false end
  end
end

-- 3. apply, in memory
local function advance(q, t)
  if t > q.now then q.now = t end
end

for _, f in ipairs(events) do
  local kind, tid = f[1], f[3]
  local q = tenant(tid)
  if kind == 'R' then
    local rid, t, tok, mk, dk = f[4], f[5], f[6], f[7], f[9]
    advance(q, t)
    if not recs[tid][rid] then
      if mk > q.mk then q.mk = mk; q.mke = f[8]; q.um = 0; q.rm = 0 end
      if mk == q.mk then q.rm = q.rm + tok end
      if dk > q.dk then q.dk = dk; q.ud = 0; q.rd = 0 end
      if dk == q.dk then q.rd = q.rd + tok end
      q.openn = q.openn + 1
      q.opent = q.opent + tok
      recs[tid][rid] = {t = t, tok = tok, cnt = tok, open = true}
      dirty[tid][rid] = true
      added[tid][rid] = true
    end
  elseif kind == 'S' or kind == 'L' then
    local rid = f[4]
    advance(q, f[5])
    local r = recs[tid][rid]
    if r and r.open then
      local charged = 0
      if kind == 'S' then charged = math.min(f[6], r.tok) end
      -- charged to the period of the reservation: counted only if that is the latest one
      if r.t >= q.mk and r.t < q.mke then q.um = q.um + charged; q.rm = q.rm - r.tok end
      if r.t >= q.dk and r.t < q.dk + DAY then q.ud = q.ud + charged; q.rd = q.rd - r.tok end
      q.openn = q.openn - 1
      q.opent = q.opent - r.tok
      r.cnt = charged
      r.open = false
      dirty[tid][rid] = true
    end
  elseif kind == 'J' then
    advance(q, f[4])
    q.rej = q.rej + 1
  elseif kind == 'P' then
    if redis.call('SADD', P .. 'pe:' .. tid, f[4]) == 1 then
      if f[5] > q.pt then q.pt = f[5] end
      q.budget, q.period, q.tpm = f[6], f[7], f[8]
      q.rpm, q.maxc, q.ttl = f[9], f[10], f[11]
    end
  end
end

-- 4. write back; what left the window goes (closed records) or stays (open ones)
for _, tid in ipairs(order) do
  local q = tenants[tid]
  local flat = {}
  for _, k in ipairs(NUMERIC) do
    if q[k] ~= nil then flat[#flat + 1] = k; flat[#flat + 1] = fmt(q[k]) end
  end
  if q.period ~= nil then flat[#flat + 1] = 'period'; flat[#flat + 1] = q.period end
  redis.call('HSET', P .. 'q:' .. tid, unpack(flat))
  if q.new then redis.call('SADD', P .. 'tenants', tid) end
  local rk, wk, cutoff = P .. 'r:' .. tid, P .. 'w:' .. tid, q.now - W
  local put, gone, zadd = {}, {}, {}
  for rid in pairs(dirty[tid]) do
    local r = recs[tid][rid]
    if not r.open and r.t <= cutoff then
      gone[#gone + 1] = rid
    else
      put[#put + 1] = rid; put[#put + 1] = unparse(r)
      if added[tid][rid] and r.t > cutoff then
        zadd[#zadd + 1] = fmt(r.t); zadd[#zadd + 1] = rid
      end
    end
  end
  bulk('HSET', rk, put, 2)
  bulk('HDEL', rk, gone, 1)
  bulk('ZREM', wk, gone, 1)
  bulk('ZADD', wk, zadd, 2)
  if q.now >= 0 then
    local old = redis.call('ZRANGEBYSCORE', wk, '-inf', fmt(cutoff))
    if #old > 0 then
      local closed = {}
      for s = 1, #old, CHUNK do
        local chunk = {unpack(old, s, math.min(s + CHUNK - 1, #old))}
        local values = redis.call('HMGET', rk, unpack(chunk))
        for j = 1, #chunk do
          if values[j] and string.byte(values[j], -1) == 48 then closed[#closed + 1] = chunk[j] end
        end
      end
      bulk('HDEL', rk, closed, 1)
      redis.call('ZREMRANGEBYSCORE', wk, '-inf', fmt(cutoff))
    end
  end
end

if last > pos then redis.call('HSET', POS, stream, fmt(last)) end
return applied
