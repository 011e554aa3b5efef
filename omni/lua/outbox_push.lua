-- Push a delivery onto the queue's stream, once per delivery id.
-- KEYS: 1 stream, 2 the delivery's push guard; ARGV: 1 delivery id, 2 owner, 3 guard ttl (ms)
-- Returns the new entry id, or false when the delivery was pushed already.
if not redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[3]) then
  return false
end
return redis.call('XADD', KEYS[1], '*', 'd', ARGV[1], 'o', ARGV[2])
