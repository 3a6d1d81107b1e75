-- Reads of the quota view, atomically, as text (reservation records are stored MessagePack).
-- ARGV: prefix, 'tenant', tenant, from (µs or -inf): that tenant's quota fields, then the
--       records of its window entries admitted after from ({} if the view has no such tenant)
-- ARGV: prefix, 'all': {{tenant, quota, ...}, {"tenant:request id", record, ...}}
-- A quota is its fields joined by '|' ('' for a policy field not set); a record is
-- "admitted at|tokens|tokens counted|open (1/0)".
local P, mode = ARGV[1], ARGV[2]

local function fmt(x)
  if x < 1e14 and x > -1e14 then return tostring(x) end
  return string.format('%.0f', x)
end


local function record_text(raw)
  local r = cmsgpack.unpack(raw)
  return fmt(r[1]) .. '|' .. fmt(r[2]) .. '|' .. fmt(r[3]) .. (r[4] and '|1' or '|0')
end

if mode == 'tenant' then
  local tid = ARGV[3]
  local raw = redis.call('HGET', P .. 'q', tid)
  if not raw then return {} end
  local out = {raw}
  local from = ARGV[4] == '-inf' and '-inf' or '(' .. ARGV[4]
  local rids = redis.call('ZRANGEBYSCORE', P .. 'w:' .. tid, from, '+inf')
  for s = 1, #rids, 1000 do
    local keys = {}
    for j = s, math.min(s + 999, #rids) do keys[#keys + 1] = tid .. ':' .. rids[j] end
    for _, v in ipairs(redis.call('HMGET', P .. 'r', unpack(keys))) do
      out[#out + 1] = v and record_text(v) or false
    end
  end
  return out
end

local quotas, records = redis.call('HGETALL', P .. 'q'), redis.call('HGETALL', P .. 'r')
for j = 2, #records, 2 do records[j] = record_text(records[j]) end
return {quotas, records}
