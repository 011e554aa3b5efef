-- Note where a customer sits in the team inbox (omni.conversations), in its own hash,
-- only while the customer is there: an erased customer is not recreated by it.
-- KEYS: 1 customer hash
-- ARGV: 1 place ('' = in no list), 2 waiting since (ms, '' = nobody waits)
-- Returns 1 written, 0 no such customer.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
if ARGV[1] == '' then
  redis.call('HDEL', KEYS[1], 'ix')
else
  redis.call('HSET', KEYS[1], 'ix', ARGV[1])
end
if ARGV[2] == '' then
  redis.call('HDEL', KEYS[1], 'iw')
else
  redis.call('HSET', KEYS[1], 'iw', ARGV[2])
end
return 1
