-- Read newest-first timeline entries with their annotations, in one round trip.
-- KEYS: 1 customer hash, 2 timeline, 3 index (the timeline itself, or a channel
--       index sharing its entry ids), 4 annotations hash
-- ARGV: 1 start ('+' or '(' .. entry id), 2 count, 3 '1' to return the customer hash
-- Returns {customer hash (flat) or {} / {exists, merged into, absorbed}, the page}.
-- `absorbed` lists the customers merged into this one, whose timelines the caller reads
-- beside this one.
--
-- The page is one msgpack document (omni.codec.decode_page reads it), not a reply of
-- nested arrays: the client parses one string instead of four replies an entry, and
-- decodes every stored message of the page in one call. It is an array of rows, newest
-- first: [entry id, conversation number, message], and, when the entry has any
-- annotation, a fourth element: its four (delivery status, deleted at, reaction, read
-- at; nil when absent). A message stored as schema 4 (a msgpack array after its schema
-- byte) is put in the row as it is, without the byte; any other stored message (an
-- older schema, or bytes that are not one) goes as binary, whole, for the codec to read
-- or refuse; an entry without one as nil.
local function sized(small, long8, long16, long32, s)
  local n = #s
  if small and n < 32 then return string.char(small + n) .. s end
  if n < 256 then return string.char(long8, n) .. s end
  if n < 65536 then return string.char(long16, math.floor(n / 256), n % 256) .. s end
  return string.char(long32, math.floor(n / 16777216), math.floor(n / 65536) % 256,
    math.floor(n / 256) % 256, n % 256) .. s
end
local function text(s) return sized(0xa0, 0xd9, 0xda, 0xdb, s) end
local function binary(s)
  if not s then return '\192' end
  return sized(nil, 0xc4, 0xc5, 0xc6, s)
end
local function array(n)
  if n < 16 then return string.char(0x90 + n) end
  return string.char(0xdc, math.floor(n / 256), n % 256)
end

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
local notes = nil
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
local page = {array(#entries)}
for i = 1, #entries do
  local fields, blob, conv = entries[i][2], false, '0'
  for j = 1, #fields, 2 do
    if fields[j] == 'm' then blob = fields[j + 1] elseif fields[j] == 'v' then conv = fields[j + 1] end
  end
  local message
  if blob and string.byte(blob, 1) == 4 then
    message = string.sub(blob, 2)
  else
    message = binary(blob)
  end
  local row = text(entries[i][1]) .. text(conv) .. message
  local at = 4 * (i - 1)
  if notes and (notes[at + 1] or notes[at + 2] or notes[at + 3] or notes[at + 4]) then
    page[#page + 1] = '\148' .. row .. '\148' .. binary(notes[at + 1])
      .. binary(notes[at + 2]) .. binary(notes[at + 3]) .. binary(notes[at + 4])
  else
    page[#page + 1] = '\147' .. row
  end
end
return {state, table.concat(page)}
