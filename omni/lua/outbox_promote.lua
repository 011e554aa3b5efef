-- Move retries whose backoff is over from the delayed set onto the stream.
-- KEYS: 1 delayed zset, 2 stream; ARGV: 1 now (ms), 2 how many at most
-- Returns {moved, score of the next retry still waiting or ''}.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for i = 1, #due do
  local d, o = string.match(due[i], '^(%S+) ?(%S*)$')
  if d then
    redis.call('XADD', KEYS[2], '*', 'd', d, 'o', o)
  end
  redis.call('ZREM', KEYS[1], due[i])
end
local nxt = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {#due, nxt[2] or ''}
