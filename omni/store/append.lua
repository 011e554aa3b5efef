-- Append one message to a customer's timeline, exactly once, and update the customer.
-- KEYS: 1 customer hash, 2 timeline, 3 channel timeline, 4 message-id index,
--       5 annotations; for the new message's live event (see the end), 6 the
--       customer's event stream, 7 its part of the service-wide one
-- ARGV: 1 dedupe field, 2 message blob, 3 channel, 4 identity field, 5 identity blob,
--       6 profile blob ('' when none), 7 direction, 8 delivery status blob ('' = none),
--       9 '1' when the customer id came from a cache (see below),
--       10 the customers absorbed (the 'absorbed' field) whose indexes the caller has
--          looked in already ('' = none), 11 '1' for omni's own message (a survey
--          question): like the timeline's events, it opens no conversation,
--       12 the dedupe field of the layout before digests (omni.store.entries), looked
--          up when the first is not there: messages stored before are indexed by it
--       13-15 with KEYS 6-7: the live event's body (omni.live) cut where the conversation
--          number and the message's time (RFC 3339, ms) go, 16 and 17 the streams'
--          MAXLENs, 18 the doorbell's channel, 19 its message (the customer id)
-- Returns {0, entry id, conversation number, blob of the stored message} for a repeat;
-- {1, entry id, conversation number, profile set (0/1), 'ho', 'cv_assignee', 'cv_status',
-- 'last_channel', 'iw', 'ix', journey, last resolution, told} for a new message (the
-- handoff fields say who answers it, the next four where the team inbox shows it, so the
-- caller need not read them; journey is 'n' when the message opened a conversation, 's'
-- when an inbound one switched channel, else ''; last resolution is the 'rp' field, for
-- the service report's reopen count, when it opened one; told is 1 when the script wrote
-- the live event, else 0);
-- {-3, survivor id} when this customer was merged into another (the caller retries there);
-- {-5} while the customer is being erased (omni.erasure): nothing is stored, the sender
-- is asked to send again, and once the erasure is done the message makes a new customer;
-- {-6, absorbed} when the id is not in this customer's index and it absorbed others
-- whose indexes the caller has not looked in (see below).
-- Everything the script reads of the customer, in one call: each call from Lua costs
-- the server more than the fields it reads (ho, cv_assignee, iw, ix and rp are not
-- written here, so reading them first answers as reading them last would).
local held = redis.call('HMGET', KEYS[1], 'merged_into', 'erasing', 'absorbed', ARGV[4],
  'cv_n', 'cv_status', 'cv_channels', 'last_channel', 'tl_channels', 'created', 'rev',
  'ho', 'cv_assignee', 'iw', 'ix', 'rp')
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
if ARGV[9] == '1' and not held[4] then
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
local conv = tonumber(held[5])
local status = held[6]
-- The customer hash's writes, made in one HSET at the end.
local sets = {}
local function set(field, value)
  sets[#sets + 1] = field
  sets[#sets + 1] = value
end
-- The timeline's own events (channel 'system': cart changes, merges) belong to no
-- conversation: they neither open one nor count as a channel the customer used.
local system = channel == 'system' or ARGV[11] == '1'
if (not system) and ((not conv) or status == 'resolved') then
  conv = (conv or 0) + 1
  set('cv_n', conv)
  set('cv_status', 'open')
  set('cv_channels', channel)
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
local indexed = held[9] or ''
if not string.find(',' .. indexed .. ',', ',' .. channel .. ',', 1, true) then
  set('tl_channels', indexed == '' and channel or indexed .. ',' .. channel)
end

local ms = string.match(id, '^(%d+)')
local journey = ''
if system then
  -- nothing: see above
elseif status == 'new' then
  set('cv_started', ms)
  journey = 'n'
else
  local channels = held[7] or ''
  if not string.find(',' .. channels .. ',', ',' .. channel .. ',', 1, true) then
    set('cv_channels', channels .. ',' .. channel)
  end
  if held[8] and held[8] ~= channel then
    set('cv_switched', ms)
    if ARGV[7] == 'inbound' then
      journey = 's'
    end
  end
end
if not held[10] then
  set('created', ms)
  set('first_seen', ms)
end
if ARGV[8] ~= '' then
  redis.call('HSET', KEYS[5], 's:' .. id, ARGV[8])
end
local last_channel = held[8]
if ARGV[7] == 'inbound' then
  -- 'in:<channel>' is when the customer last wrote there (Instagram's reply window).
  set('last_seen', ms)
  set('last_channel', channel)
  set('in:' .. channel, ms)
  last_channel = channel
  if not held[4] then
    set(ARGV[4], ARGV[5])
  end
end
local profile_set = 0
if ARGV[6] ~= '' then
  profile_set = redis.call('HSETNX', KEYS[1], 'p', ARGV[6])
end
local rev = (tonumber(held[11]) or 0) + 1
set('rev', rev)
if profile_set == 1 then
  -- The profile changed: an If-Match read before this is stale for profile writes.
  set('profile_rev', rev)
end
redis.call('HSET', KEYS[1], unpack(sets))
if status == 'new' then
  status = 'open'
end
local resolved = ''
if journey == 'n' then
  resolved = held[16] or ''
end

-- An epoch time in ms as omni.clock.iso writes it (civil from days: H. Hinnant's).
local function iso(ms)
  local seconds = math.floor(ms / 1000)
  local days = math.floor(seconds / 86400)
  local second = seconds - days * 86400
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
    - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local day = doy - math.floor((153 * mp + 2) / 5) + 1
  local month = mp < 10 and mp + 3 or mp - 9
  local year = yoe + era * 400 + (month <= 2 and 1 or 0)
  return string.format('%04d-%02d-%02dT%02d:%02d:%02d.%03dZ', year, month, day,
    math.floor(second / 3600), math.floor(second % 3600 / 60), second % 60, ms % 1000)
end

-- The live event, written with the message when the caller asked (one round trip for
-- both; a listener still hears of the message only once it is stored), as omni.live
-- stages it. Not when the caller has work that comes before the event: an agent's or
-- the queue's conversation (omni.handoff), a journey step (the service report).
local told = 0
if KEYS[6] and not system and journey == '' and held[12] ~= 'agent'
    and held[12] ~= 'queue' then
  local body = ARGV[13] .. string.format('%d', conv) .. ARGV[14] .. iso(tonumber(ms))
    .. ARGV[15]
  redis.call('XADD', KEYS[6], 'MAXLEN', '~', ARGV[16], '*', 'e', body)
  redis.call('XADD', KEYS[7], 'MAXLEN', '~', ARGV[17], '*', 'e', body)
  redis.call('PUBLISH', ARGV[18], ARGV[19])
  told = 1
end
return {1, id, conv, profile_set, held[12], held[13], status, last_channel, held[14], held[15],
  journey, resolved, told}
