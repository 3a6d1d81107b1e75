-- One tenant of the quota view, atomically: its quota fields, then the reservation records of
-- its window entries admitted after ARGV[3] (µs, or -inf). ARGV: prefix, tenant, from.
local P, tid = ARGV[1], ARGV[2]
local q = redis.call('HGET', P .. 'q', tid)
if not q then return {} end
local out = {q}
local from = ARGV[3] == '-inf' and '-inf' or '(' .. ARGV[3]
local rids = redis.call('ZRANGEBYSCORE', P .. 'w:' .. tid, from, '+inf')
for s = 1, #rids, 1000 do
  local keys = {}
  for j = s, math.min(s + 999, #rids) do keys[#keys + 1] = tid .. ':' .. rids[j] end
  for _, v in ipairs(redis.call('HMGET', P .. 'r', unpack(keys))) do out[#out + 1] = v end
end
return out
