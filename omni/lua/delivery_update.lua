-- Move an existing delivery to a state; never recreates an erased record, and never
-- takes a delivery the channel confirmed (delivered) back to another state.
-- KEYS: 1 delivery hash
-- ARGV: 1 state, 2 now (ms), 3 count of fields to set, then field, value pairs, then
--       the fields to delete. Returns 1 when written, 0 when gone or already delivered.
local current = redis.call('HGET', KEYS[1], 'state')
if not current then
  return 0
end
if current == 'delivered' and ARGV[1] ~= 'delivered' then
  return 0
end
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'updated', ARGV[2])
local n = tonumber(ARGV[3])
for i = 0, n - 1 do
  redis.call('HSET', KEYS[1], ARGV[4 + 2 * i], ARGV[5 + 2 * i])
end
for i = 4 + 2 * n, #ARGV do
  redis.call('HDEL', KEYS[1], ARGV[i])
end
return 1
