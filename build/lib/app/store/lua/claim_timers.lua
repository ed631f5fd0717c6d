-- claim_timers.lua: claims the due timers of one partition. A claimed timer is pushed
-- ARGV[2] ms into the future, so that if its claimer dies another sweeper takes it then;
-- the transition that handles it removes it.
-- KEYS[1] partition timers zset
-- ARGV[1] most timers to claim, [2] claim ms
-- Returns {now ms, next due ms or -1 when none, member1, due1, member2, due2, ...}.
local now = now_ms()
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', 0,
  tonumber(ARGV[1]))
local reply = { now, -1 }
for i = 1, #due, 2 do
  redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[2]), due[i])
  table.insert(reply, due[i])
  table.insert(reply, due[i + 1])
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if first[2] then reply[2] = tonumber(first[2]) end
return reply
