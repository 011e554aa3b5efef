-- A customer's open survey (omni.surveys): at most one, whatever the channel, so an
-- answer on one channel closes it on all.
-- KEYS: 1 customer hash, 2 the open survey (hash)
-- ARGV: 1 op, 2 now (ms), then per op:
--   open  3 survey id, 4 first kind, 5 expiry (ms), 6 conversation number ('' = on
--         demand), 7 NPS period (ms; 0 when no NPS is asked), then field/value pairs
--   take  3 survey id, 4 the kind answered, 5 the next kind ('' = done), 6 steps after it
-- Returns {-2} no customer, {-3, survivor} merged; open: {1}, {0, last NPS (ms)} within
-- the NPS period, {-1} this conversation was asked already; take: {1} or {0} when the
-- survey is not open at that question any more (answered elsewhere, expired, replaced).
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {-2}
end
local moved = redis.call('HGET', KEYS[1], 'merged_into')
if moved then
  return {-3, moved}
end
local op, now = ARGV[1], tonumber(ARGV[2])
if op == 'open' then
  if ARGV[6] ~= '' and redis.call('HGET', KEYS[1], 'svy_conv') == ARGV[6] then
    return {-1}
  end
  local period = tonumber(ARGV[7])
  if period > 0 then
    local last = redis.call('HGET', KEYS[1], 'nps_at')
    if last and now - tonumber(last) < period then
      return {0, last}
    end
    redis.call('HSET', KEYS[1], 'nps_at', now)
  end
  if ARGV[6] ~= '' then
    redis.call('HSET', KEYS[1], 'svy_conv', ARGV[6])
  end
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[2], 'id', ARGV[3], 'kind', ARGV[4])
  for i = 8, #ARGV, 2 do
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
  end
  redis.call('PEXPIREAT', KEYS[2], tonumber(ARGV[5]))
  return {1}
end
if op == 'take' then
  local open = redis.call('HMGET', KEYS[2], 'id', 'kind')
  if open[1] ~= ARGV[3] or open[2] ~= ARGV[4] then
    return {0}
  end
  if ARGV[5] == '' then
    redis.call('DEL', KEYS[2])
  else
    redis.call('HSET', KEYS[2], 'kind', ARGV[5], 'steps', ARGV[6])
  end
  return {1}
end
return redis.error_reply('unknown survey op ' .. op)
