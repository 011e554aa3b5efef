-- Record a delivery once, in its owner's slot; a repeat changes nothing.
-- KEYS: 1 delivery hash, 2 the customer's delivery index (absent for no customer)
-- ARGV: 1 kind, 2 payload blob, 3 now (ms), 4 queue, 5 delivery id
-- Returns the state of the record that already existed, or '' when this call made it.
local state = redis.call('HGET', KEYS[1], 'state')
if state then
  return state
end
redis.call('HSET', KEYS[1], 'kind', ARGV[1], 'p', ARGV[2], 'state', 'queued',
  'attempts', 0, 'created', ARGV[3], 'updated', ARGV[3], 'queue', ARGV[4])
if KEYS[2] then
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[5])
end
return ''
