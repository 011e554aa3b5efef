-- Mark a customer as merged into a survivor: from here on its writes are refused with
-- the survivor's id (append.lua and write_field.lua), so nothing lands on it any more.
-- KEYS: 1 the source customer hash
-- ARGV: 1 survivor id, 2 now (ms), 3 a new merge id (kept unless one is there already)
-- Returns {1, merge id, merged at (ms)} marked (or already marked for this survivor:
-- the merge id it was marked with), {-2} no such customer, {-1, other} already merged
-- into another customer.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {-2}
end
local moved = redis.call('HGET', KEYS[1], 'merged_into')
if moved and moved ~= ARGV[1] then
  return {-1, moved}
end
if not moved then
  redis.call('HSET', KEYS[1], 'merged_into', ARGV[1], 'merged_at', ARGV[2])
  redis.call('HINCRBY', KEYS[1], 'rev', 1)
end
redis.call('HSETNX', KEYS[1], 'merge_id', ARGV[3])
local mark = redis.call('HMGET', KEYS[1], 'merge_id', 'merged_at')
return {1, mark[1], mark[2] or ARGV[2]}
