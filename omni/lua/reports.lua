-- One duration sample for the service report, in a bounded per-day sorted set.
-- KEYS: 1 the samples zset (one shard's, one day's)
-- ARGV: 1 member ("<channel>|<agent>|<digest of the conversation>"), 2 duration (ms),
--       3 the most samples the set keeps, 4 how long it lives (s)
-- Past the bound a random member goes, so the set stays a uniform sample of the day.
redis.call('ZADD', KEYS[1], tonumber(ARGV[2]), ARGV[1])
if redis.call('ZCARD', KEYS[1]) > tonumber(ARGV[3]) then
  local victim = redis.call('ZRANDMEMBER', KEYS[1])
  redis.call('ZREM', KEYS[1], victim)
end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
return 1
