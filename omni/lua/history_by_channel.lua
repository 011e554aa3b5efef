-- One page of a customer's timeline on one channel, newest first.
-- KEYS: 1 timeline, 2 channel timeline; ARGV: 1 start (exclusive '(' id or '+'), 2 count
-- Returns timeline entries like XREVRANGE does.
local ids = redis.call('XREVRANGE', KEYS[2], ARGV[1], '-', 'COUNT', tonumber(ARGV[2]))
local out = {}
for i = 1, #ids do
  local id = ids[i][1]
  local entry = redis.call('XRANGE', KEYS[1], id, id)[1]
  if entry then out[#out + 1] = entry end
end
return out
