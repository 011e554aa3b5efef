-- Start an attempt at a delivery: count it before running it, so a delivery that
-- keeps killing its worker still runs out of attempts.
-- KEYS: 1 delivery hash; ARGV: 1 max attempts, 2 now (ms)
-- Returns {verdict, attempts, kind, payload, last reason}; verdict is one of
--   gone (no record: erased), done (sent or delivered), failed (already failed),
--   exhausted (no attempts left), go (attempt number `attempts` may run).
local f = redis.call('HMGET', KEYS[1], 'state', 'attempts', 'kind', 'p', 'reason')
local state = f[1]
if not state then
  return {'gone', 0, '', '', ''}
end
local attempts = tonumber(f[2] or '0')
local kind = f[3] or ''
local reason = f[5] or ''
if state == 'sent' or state == 'delivered' then
  return {'done', attempts, kind, '', reason}
end
if state == 'failed' then
  return {'failed', attempts, kind, '', reason}
end
if attempts >= tonumber(ARGV[1]) then
  return {'exhausted', attempts, kind, '', reason}
end
attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'updated', ARGV[2], 'tried', ARGV[2])
return {'go', attempts, kind, f[4] or '', reason}
