-- Give a message stored on a merge's survivor after the merge back to the absorbed
-- customer it came from (omni.unmerge), at its own entry id; once.
-- KEYS: 1 source customer hash, 2 its timeline, 3 its channel timeline, 4 its
--       message-id index, 5 its annotations
-- ARGV: 1 entry id, 2 message blob, 3 conversation number, 4 message-id index field,
--       5 channel, 6 direction, 7..10 annotations s, d, r, rd ('' = none), 11 the
--       message's field in the layout before digests (omni.store.entries)
-- Returns 1 copied, 0 there already.
if redis.call('HEXISTS', KEYS[4], ARGV[4]) == 1 or redis.call('HEXISTS', KEYS[4], ARGV[11]) == 1 then
  return 0
end
local ok = redis.pcall('XADD', KEYS[2], ARGV[1], 'm', ARGV[2], 'v', ARGV[3])
local id = ARGV[1]
if type(ok) == 'table' and ok.err then
  -- A newer message landed here first: this one goes on top instead of in its place.
  id = redis.call('XADD', KEYS[2], '*', 'm', ARGV[2], 'v', ARGV[3])
end
redis.call('XADD', KEYS[3], id, 'v', ARGV[3])
-- The entry id packed as append.lua packs it (omni.store.entries.packed_entry).
local ms, seq = string.match(id, '^(%d+)-(%d+)$')
if tonumber(seq) <= 65535 then
  redis.call('HSET', KEYS[4], ARGV[4], struct.pack('>I6I2', tonumber(ms), tonumber(seq)))
else
  redis.call('HSET', KEYS[4], ARGV[4], id)
end
-- The channel's index is one an erasure must find (append.lua's 'tl_channels').
local indexed = redis.call('HGET', KEYS[1], 'tl_channels') or ''
if not string.find(',' .. indexed .. ',', ',' .. ARGV[5] .. ',', 1, true) then
  redis.call('HSET', KEYS[1], 'tl_channels', indexed == '' and ARGV[5] or indexed .. ',' .. ARGV[5])
end
local names = {'s', 'd', 'r', 'rd'}
for i = 1, 4 do
  if ARGV[6 + i] ~= '' then
    redis.call('HSET', KEYS[5], names[i] .. ':' .. id, ARGV[6 + i])
  end
end
if ARGV[6] == 'inbound' then
  local ms = string.match(id, '^(%d+)')
  local last = tonumber(redis.call('HGET', KEYS[1], 'last_seen') or '0')
  if tonumber(ms) > last then
    redis.call('HSET', KEYS[1], 'last_seen', ms, 'last_channel', ARGV[5], 'in:' .. ARGV[5], ms)
  end
end
redis.call('HINCRBY', KEYS[1], 'rev', 1)
return 1
