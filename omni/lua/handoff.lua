-- Who answers a customer, and the service measures of the conversation, in one step.
-- KEYS: 1 customer hash
-- ARGV: 1 op, 2 now (ms), then per op:
--   assign   3 holder (bot|queue|agent), 4 assignee blob, 5 reply due (ms, '' = none),
--            6 conversation status
--   inbound  3 reply timeout (ms)
--   reply    3 author kind (bot|agent)
--   resolve  3 caller kind (bot|agent), 4 assignee blob (the bot)
--   expire   3 assignee blob (the queue)
-- Fields: ho = holder (absent: the bot), cv_assignee = who, for the context,
-- ho_due = when an agent's reply is due, cv_agent = the last conversation number an agent
-- took part in, cv_first / cv_resolved = "<conversation number>:<ms>:<bot|agent>".
-- Returns {-2} for no customer, {-3, survivor} for a merged one, else per op below.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {-2}
end
local moved = redis.call('HGET', KEYS[1], 'merged_into')
if moved then
  return {-3, moved}
end
local op, now = ARGV[1], tonumber(ARGV[2])
local state = redis.call('HMGET', KEYS[1], 'ho', 'ho_due', 'cv_n', 'cv_status', 'cv_channels',
  'cv_started', 'cv_first', 'cv_agent', 'cv_assignee', 'cv_rq')
local holder, due, conv, status = state[1] or 'bot', state[2], state[3] or '0', state[4]
local first_channel = string.match(state[5] or '', '^([^,]+)') or ''

-- {1, previous holder, conversation number}
if op == 'assign' then
  redis.call('HSET', KEYS[1], 'ho', ARGV[3], 'cv_assignee', ARGV[4], 'cv_status', ARGV[6])
  if ARGV[5] ~= '' then
    redis.call('HSET', KEYS[1], 'ho_due', ARGV[5])
  else
    redis.call('HDEL', KEYS[1], 'ho_due')
  end
  if ARGV[3] == 'agent' then
    redis.call('HSET', KEYS[1], 'cv_agent', conv)
  end
  if status == 'resolved' then
    redis.call('HDEL', KEYS[1], 'cv_resolved')  -- taken up again: not resolved any more
  end
  redis.call('HINCRBY', KEYS[1], 'rev', 1)
  return {1, holder, conv}
end

-- {1, holder, reply due ('' = none)}: the customer wrote; an agent holding the
-- conversation owes a reply from now, unless one was already owed.
if op == 'inbound' then
  if holder == 'agent' and not due then
    due = tostring(now + tonumber(ARGV[3]))
    redis.call('HSET', KEYS[1], 'ho_due', due)
    redis.call('HINCRBY', KEYS[1], 'rev', 1)
  end
  return {1, holder, due or ''}
end

-- {1, first response (1/0), ms since the conversation started, the reply cleared a due,
-- conversation number}
if op == 'reply' then
  local first, took, cleared = 0, 0, 0
  local mine = string.match(state[7] or '', '^(%d+):')
  if mine ~= conv and conv ~= '0' then
    first = 1
    took = now - tonumber(state[6] or now)
    redis.call('HSET', KEYS[1], 'cv_first', conv .. ':' .. now .. ':' .. ARGV[3])
  end
  if ARGV[3] == 'agent' then
    redis.call('HSET', KEYS[1], 'cv_agent', conv)
    if due then
      redis.call('HDEL', KEYS[1], 'ho_due')
      cleared = 1
    end
  end
  if first == 1 or cleared == 1 then
    redis.call('HINCRBY', KEYS[1], 'rev', 1)
  end
  return {1, first, took, cleared, conv}
end

-- {1, resolved by, the conversation's first channel, conversation number, started (ms),
-- its channels, the assignee before, '1' when a bot asked a question omni knew the answer
-- to in it (cv_rq)}, or {0} when already resolved
if op == 'resolve' then
  if status == 'resolved' or conv == '0' then
    return {0}
  end
  local by = 'bot'
  if state[8] == conv or ARGV[3] == 'agent' then
    by = 'agent'
  end
  redis.call('HSET', KEYS[1], 'cv_status', 'resolved', 'cv_resolved', conv .. ':' .. now .. ':' .. by,
    'ho', 'bot', 'cv_assignee', ARGV[4])
  redis.call('HDEL', KEYS[1], 'ho_due')
  redis.call('HINCRBY', KEYS[1], 'rev', 1)
  return {1, by, first_channel, conv, state[6] or '', state[5] or '', state[9] or '',
    state[10] or ''}
end

-- {1} when the agent's reply was overdue and the conversation went back to the queue,
-- else {0, reply due ('' = none)}
if op == 'expire' then
  if holder == 'agent' and due and tonumber(due) <= now then
    redis.call('HSET', KEYS[1], 'ho', 'queue', 'cv_assignee', ARGV[3], 'cv_status', 'pending')
    redis.call('HDEL', KEYS[1], 'ho_due')
    redis.call('HINCRBY', KEYS[1], 'rev', 1)
    return {1}
  end
  return {0, due or ''}
end

return redis.error_reply('unknown handoff op ' .. op)
