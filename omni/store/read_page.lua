-- Read newest-first timeline entries with their annotations, in one round trip.
-- KEYS: 1 customer hash, 2 timeline, 3 index (the timeline itself, or a channel
--       index sharing its entry ids), 4 annotations hash
-- ARGV: 1 start ('+' or '(' .. entry id), 2 count, 3 '1' to return the customer hash
-- Returns {customer hash (flat) or {} / {exists, merged into, absorbed}, entries as
-- {entry id, message blob, conversation number}, annotations: none at all, or 4 per
-- entry (delivery status, deleted at, reaction, read at) in entry order}. `absorbed` lists the customers merged into this one, whose timelines the
-- caller reads beside this one.
local state
if ARGV[3] == '1' then
  state = redis.call('HGETALL', KEYS[1])
else
  local found = redis.call('HMGET', KEYS[1], 'rev', 'merged_into', 'absorbed')
  state = {found[1] and 1 or 0, found[2] or '', found[3] or ''}
end
local count = tonumber(ARGV[2])
local entries
if KEYS[3] == KEYS[2] then
  entries = redis.call('XREVRANGE', KEYS[2], ARGV[1], '-', 'COUNT', count)
else
  entries = {}
  local ids = redis.call('XREVRANGE', KEYS[3], ARGV[1], '-', 'COUNT', count)
  for i = 1, #ids do
    local id = ids[i][1]
    local entry = redis.call('XRANGE', KEYS[2], id, id)[1]
    if entry then entries[#entries + 1] = entry end
  end
end
local notes = {}
if #entries > 0 and redis.call('EXISTS', KEYS[4]) == 1 then
  local fields = {}
  for i = 1, #entries do
    local id = entries[i][1]
    fields[#fields + 1] = 's:' .. id
    fields[#fields + 1] = 'd:' .. id
    fields[#fields + 1] = 'r:' .. id
    fields[#fields + 1] = 'rd:' .. id
  end
  notes = redis.call('HMGET', KEYS[4], unpack(fields))
end
local rows = {}
for i = 1, #entries do
  local fields, blob, conv = entries[i][2], false, '0'
  for j = 1, #fields, 2 do
    if fields[j] == 'm' then blob = fields[j + 1] elseif fields[j] == 'v' then conv = fields[j + 1] end
  end
  rows[i] = {entries[i][1], blob, conv}
end
return {state, rows, notes}
