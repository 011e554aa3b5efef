-- Optimistic write of part of a customer (facts, cart, profile) under If-Match.
-- Every write bumps the customer's revision `rev`; each part remembers the rev it
-- was last written at (`<part>_rev`). An If-Match of N ("I have seen the customer at
-- rev N") succeeds when the part has not changed since: part_rev <= N <= rev.
-- KEYS: 1 customer hash
-- ARGV: 1 part name, 2 If-Match rev ('' = unconditional), 3 field count to set,
--       then field, value pairs, then the fields to delete.
-- Returns {status, rev, old value of the first set field}: 1 done, -1 stale, -2 no customer,
-- -3 merged into another customer (whose id is the third value).
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {-2, 0, false}
end
local moved = redis.call('HGET', KEYS[1], 'merged_into')
if moved then
  return {-3, 0, moved}
end
local rev = tonumber(redis.call('HGET', KEYS[1], 'rev') or '0')
if ARGV[2] ~= '' then
  local seen = tonumber(ARGV[2])
  -- Part '*' is the whole customer (a merge): any change since N makes it stale.
  local part_rev = rev
  if ARGV[1] ~= '*' then
    part_rev = tonumber(redis.call('HGET', KEYS[1], ARGV[1] .. '_rev') or '0')
  end
  if (not seen) or part_rev > seen or seen > rev then
    return {-1, rev, false}
  end
end
local n = tonumber(ARGV[3])
local old = false
if n > 0 then
  old = redis.call('HGET', KEYS[1], ARGV[4])
end
for i = 0, n - 1 do
  redis.call('HSET', KEYS[1], ARGV[4 + 2 * i], ARGV[5 + 2 * i])
end
for i = 4 + 2 * n, #ARGV do
  redis.call('HDEL', KEYS[1], ARGV[i])
end
rev = redis.call('HINCRBY', KEYS[1], 'rev', 1)
if ARGV[1] ~= '*' then
  redis.call('HSET', KEYS[1], ARGV[1] .. '_rev', rev)
else
  -- A whole-customer write may change every part: reads of any part before it are stale.
  redis.call('HSET', KEYS[1], 'facts_rev', rev, 'cart_rev', rev, 'profile_rev', rev)
end
return {1, rev, old}
