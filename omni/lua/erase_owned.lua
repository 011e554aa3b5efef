-- Delete a key that points at a customer (a channel identity, a push token) only while
-- it still points at the customer being erased: one another customer holds now is theirs.
-- KEYS: 1 the key
-- ARGV: the values that name the customer being erased
-- Returns 1 when deleted, 0 when absent or someone else's.
local held = redis.call('GET', KEYS[1])
if not held then
  return 0
end
for i = 1, #ARGV do
  if held == ARGV[i] then
    redis.call('DEL', KEYS[1])
    return 1
  end
end
return 0
