-- Undo a merge's mark (omni.unmerge): the absorbed customer takes its fields back as
-- they were at the merge and stops naming the survivor, so it takes writes again.
-- KEYS: 1 the source customer hash
-- ARGV: 1 survivor id, then field, value pairs: the source's fields at merge time
-- Returns 1 unmarked, 0 already (not merged), -1 merged into another, -2 no customer.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return -2
end
local moved = redis.call('HGET', KEYS[1], 'merged_into')
if not moved then
  return 0
end
if moved ~= ARGV[1] then
  return -1
end
for i = 2, #ARGV, 2 do
  if ARGV[i] ~= 'rev' then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  end
end
redis.call('HDEL', KEYS[1], 'merged_into', 'merged_at', 'merge_id')
redis.call('HINCRBY', KEYS[1], 'rev', 1)
return 1
