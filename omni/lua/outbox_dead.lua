-- Dead-letter a delivery (once, however often a worker gets here) and take its entry
-- off the stream.
-- KEYS: 1 stream, 2 dead-letter stream, 3 dead-letter index
-- ARGV: 1 group, 2 stream entry id, 3 delivery id, 4 owner, 5 kind, 6 reason, 7 now (ms)
if redis.call('HEXISTS', KEYS[3], ARGV[3]) == 0 then
  local id = redis.call('XADD', KEYS[2], '*', 'd', ARGV[3], 'o', ARGV[4], 'k', ARGV[5],
    'r', ARGV[6], 't', ARGV[7])
  redis.call('HSET', KEYS[3], ARGV[3], id)
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return 1
