-- Move a dead letter back onto the stream, if it is still the one the caller read.
-- KEYS: 1 stream, 2 dead-letter stream, 3 dead-letter index
-- ARGV: 1 delivery id, 2 its dead-letter entry id, 3 owner
-- Returns the new stream entry id, or false when someone else re-queued it first.
if redis.call('HGET', KEYS[3], ARGV[1]) ~= ARGV[2] then
  return false
end
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('XDEL', KEYS[2], ARGV[2])
return redis.call('XADD', KEYS[1], '*', 'd', ARGV[1], 'o', ARGV[3])
