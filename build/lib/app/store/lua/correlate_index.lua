-- correlate_index.lua: helpers of the scripts on a correlation index (the waiters and kept
-- events of one (event, key), see app/store/keys.py CorrelationKeys). The correlate_*
-- scripts on the index slot include it after common.lua (app/store/correlation.py).
--
-- Waiters: a zset of "<flowId>|<seq>", scored by arrival (the counter ``n`` of the events
-- hash). Kept events: the events hash, numeric ``<id>`` -> {"x": expiry ms, "f": 1 when
-- firstOnly, "g": ms until which its record is kept, "b": who published it (none in events
-- kept before it was written)} and ``d:<id>`` -> its data JSON
-- (read only by the wait that takes it); the runs that took event
-- <id>: the hash ``<takers prefix><id>``, flow -> seq of the wait that took it.
-- Both keys live as long as the longest need of what they hold (``keep_for``): a kept event
-- its TTL and grace, a registration the retention of runs (a wait that still waits then is
-- registered again, see app/engine/correlation.py). The events hash also holds ``n``, the
-- counter that orders waiters and events.

-- Makes ``key`` live at least ``ms`` more (a key with no expiry yet gets one).
local function extend(key, ms)
  local left = tonumber(redis.call('PTTL', key))
  if left == -1 or (left >= 0 and left < ms) then redis.call('PEXPIRE', key, ms) end
end

-- Makes the index live at least ``ms`` more.
local function keep_for(waiters, events, ms)
  extend(waiters, ms)
  extend(events, ms)
end

-- The ids of the kept events, oldest first.
local function kept_ids(events)
  local ids = {}
  for _, field in ipairs(redis.call('HKEYS', events)) do
    local id = tonumber(field)
    if id then table.insert(ids, id) end
  end
  table.sort(ids)
  return ids
end

-- Drops the kept events whose record has outlived its grace; returns the ids left.
local function live_ids(events, prefix, now)
  local left = {}
  for _, id in ipairs(kept_ids(events)) do
    local kept = cjson.decode(redis.call('HGET', events, id))
    if kept.g <= now then
      redis.call('HDEL', events, id, 'd:' .. id)
      redis.call('DEL', prefix .. id)
    else
      table.insert(left, id)
    end
  end
  return left
end

-- Nothing waits and nothing is kept: the index goes.
local function drop_if_empty(waiters, events)
  if redis.call('ZCARD', waiters) == 0 and #kept_ids(events) == 0 then
    redis.call('DEL', waiters, events)
  end
end

-- Keeps an event that found no waiting run for ``ttl_ms`` (its record ``grace_ms`` more);
-- ``by``: who published it. Returns true when kept (a ttl of 0 keeps nothing).
local function keep_event(waiters, events, data, ttl_ms, first, now, grace_ms, by)
  if ttl_ms <= 0 then return false end
  local id = redis.call('HINCRBY', events, 'n', 1)
  local expiry = now + ttl_ms
  redis.call('HSET', events, id,
    cjson.encode({ x = expiry, f = first and 1 or 0, g = expiry + grace_ms, b = by }),
    'd:' .. id, data)
  keep_for(waiters, events, ttl_ms + grace_ms)
  return true
end

-- Takes the waiters an event goes to, oldest first, off the index: every run's oldest
-- waiter (one per run), or only the first one with ``first``; runs in ``skip`` (flow ->
-- true) are passed over. Returns a list of {flow, seq}.
local function pick_waiters(waiters, first, skip)
  local picked, seen = {}, {}
  for _, waiter in ipairs(redis.call('ZRANGE', waiters, 0, -1)) do
    local flow, seq = string.match(waiter, '^(.*)|(%d+)$')
    if not seen[flow] and not skip[flow] then
      seen[flow] = true
      redis.call('ZREM', waiters, waiter)
      table.insert(picked, { flow, seq })
      if first then break end
    end
  end
  return picked
end
