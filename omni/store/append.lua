-- Append one message to a customer's timeline, exactly once, and update the customer.
-- KEYS: 1 customer hash, 2 timeline, 3 channel timeline, 4 message-id index,
--       5 annotations
-- ARGV: 1 dedupe field, 2 message blob, 3 channel, 4 identity field, 5 identity blob,
--       6 profile blob ('' when none), 7 direction, 8 delivery status blob ('' = none),
--       9 '1' when the customer id came from a cache (see below),
--       10 the customers absorbed (the 'absorbed' field) whose indexes the caller has
--          looked in already ('' = none), 11 '1' for omni's own message (a survey
--          question): like the timeline's events, it opens no conversation,
--       12 the dedupe field of the layout before digests (omni.store.entries), looked
--          up when the first is not there: messages stored before are indexed by it
-- Returns {0, entry id, conversation number, blob of the stored message} for a repeat;
-- {1, entry id, conversation number, profile set (0/1), 'ho', 'cv_assignee', 'cv_status',
-- 'last_channel', 'iw', 'ix', journey, last resolution} for a new message (the handoff
-- fields say who answers it, the next four where the team inbox shows it, so the caller
-- need not read them; journey is 'n' when the message opened a conversation, 's' when an
-- inbound one switched channel, else ''; last resolution is the 'rp' field, for the
-- service report's reopen count, when it opened one);
-- {-3, survivor id} when this customer was merged into another (the caller retries there);
-- {-5} while the customer is being erased (omni.erasure): nothing is stored, the sender
-- is asked to send again, and once the erasure is done the message makes a new customer;
-- {-6, absorbed} when the id is not in this customer's index and it absorbed others
-- whose indexes the caller has not looked in (see below).
local held = redis.call('HMGET', KEYS[1], 'merged_into', 'erasing', 'absorbed')
if held[1] then
  return {-3, held[1]}
end
if held[2] then
  return {-5}
end
-- ARGV[9] '1': the caller took the customer id from its own cache, not from the
-- identity key; a customer that is not there (erased) must not be recreated by it, nor
-- one the identity left since (an undone merge, omni.unmerge): the cache is right only
-- while the customer holds the identity (its first message stored it there).
if ARGV[9] == '1' and redis.call('HEXISTS', KEYS[1], ARGV[4]) == 0 then
  return {-4}
end
-- The message-id index holds an entry id packed in 8 bytes (6 of milliseconds, 2 of
-- sequence; omni.store.entries.packed_entry), or as text: before the packing, or when
-- the sequence does not fit.
local function packed(entry)
  local ms, seq = string.match(entry, '^(%d+)-(%d+)$')
  seq = tonumber(seq)
  if seq > 65535 then return entry end
  return struct.pack('>I6I2', tonumber(ms), seq)
end
local function unpacked(value)
  if #value ~= 8 then return value end
  local ms, seq = struct.unpack('>I6I2', value)
  return string.format('%.0f-%.0f', ms, seq)
end

local found = redis.call('HMGET', KEYS[4], ARGV[1], ARGV[12])
local existing = found[1] or found[2]
if existing then
  existing = unpacked(existing)
  local entry = redis.call('XRANGE', KEYS[2], existing, existing)[1]
  local conv = 0
  local blob = ''
  if entry then
    for i = 1, #entry[2], 2 do
      if entry[2][i] == 'm' then blob = entry[2][i + 1] end
      if entry[2][i] == 'v' then conv = tonumber(entry[2][i + 1]) end
    end
  end
  return {0, existing, conv, blob}
end
-- A message stored before a merge is in the absorbed customer's index, in another slot,
-- so the caller looks there (a merge does not copy indexes: its cost stays flat). Those
-- indexes are frozen since the merge (an absorbed customer takes no writes); a merge
-- since the caller looked changes the field, and it is asked to look again.
if held[3] and held[3] ~= '' and held[3] ~= ARGV[10] then
  return {-6, held[3]}
end

local channel = ARGV[3]
local state = redis.call('HMGET', KEYS[1], 'cv_n', 'cv_status', 'cv_channels', 'last_channel',
  'tl_channels')
local conv = tonumber(state[1])
local status = state[2]
-- The timeline's own events (channel 'system': cart changes, merges) belong to no
-- conversation: they neither open one nor count as a channel the customer used.
local system = channel == 'system' or ARGV[11] == '1'
if (not system) and ((not conv) or status == 'resolved') then
  conv = redis.call('HINCRBY', KEYS[1], 'cv_n', 1)
  redis.call('HSET', KEYS[1], 'cv_status', 'open', 'cv_channels', channel)
  redis.call('HDEL', KEYS[1], 'cv_switched', 'cv_topic', 'cv_rq')
  status = 'new'
end

conv = conv or 0
local id = redis.call('XADD', KEYS[2], '*', 'm', ARGV[2], 'v', conv)
-- The channel index shares the entry id, so both streams order alike.
redis.call('XADD', KEYS[3], id, 'v', conv)
redis.call('HSET', KEYS[4], ARGV[1], packed(id))
-- 'tl_channels': every channel the timeline has an index for (KEYS[3]), which an
-- erasure deletes (the index's digests do not name them).
local indexed = state[5] or ''
if not string.find(',' .. indexed .. ',', ',' .. channel .. ',', 1, true) then
  redis.call('HSET', KEYS[1], 'tl_channels', indexed == '' and channel or indexed .. ',' .. channel)
end

local ms = string.match(id, '^(%d+)')
local journey = ''
if system then
  -- nothing: see above
elseif status == 'new' then
  redis.call('HSET', KEYS[1], 'cv_started', ms)
  journey = 'n'
else
  local channels = state[3] or ''
  if not string.find(',' .. channels .. ',', ',' .. channel .. ',', 1, true) then
    redis.call('HSET', KEYS[1], 'cv_channels', channels .. ',' .. channel)
  end
  if state[4] and state[4] ~= channel then
    redis.call('HSET', KEYS[1], 'cv_switched', ms)
    if ARGV[7] == 'inbound' then
      journey = 's'
    end
  end
end
if redis.call('HSETNX', KEYS[1], 'created', ms) == 1 then
  redis.call('HSET', KEYS[1], 'first_seen', ms)
end
if ARGV[8] ~= '' then
  redis.call('HSET', KEYS[5], 's:' .. id, ARGV[8])
end
if ARGV[7] == 'inbound' then
  -- 'in:<channel>' is when the customer last wrote there (Instagram's reply window).
  redis.call('HSET', KEYS[1], 'last_seen', ms, 'last_channel', channel, 'in:' .. channel, ms)
  redis.call('HSETNX', KEYS[1], ARGV[4], ARGV[5])
end
local profile_set = 0
if ARGV[6] ~= '' then
  profile_set = redis.call('HSETNX', KEYS[1], 'p', ARGV[6])
end
local rev = redis.call('HINCRBY', KEYS[1], 'rev', 1)
if profile_set == 1 then
  -- The profile changed: an If-Match read before this is stale for profile writes.
  redis.call('HSET', KEYS[1], 'profile_rev', rev)
end
local after = redis.call('HMGET', KEYS[1], 'ho', 'cv_assignee', 'cv_status', 'last_channel',
  'iw', 'ix', 'rp')
local resolved = ''
if journey == 'n' then
  resolved = after[7] or ''
end
return {1, id, conv, profile_set, after[1], after[2], after[3], after[4], after[5], after[6],
  journey, resolved}
