-- record_poll.lua: a worker polled for some actions: notes when, for each action and for
-- the worker, and forgets workers not seen since the cut-off.
-- KEYS[1] action -> last poll ms hash (polls), [2] workers seen zset (workers_seen)
-- ARGV[1] now ms, [2] cut-off ms (entries last seen before it are removed), [3] worker id,
--     [4..] the action names polled for
-- Each zset member is the JSON array [worker id, action name]. Returns the entries removed.
local at = ARGV[1]
for i = 4, #ARGV do
  redis.call('HSET', KEYS[1], ARGV[i], at)
  redis.call('ZADD', KEYS[2], at, cjson.encode({ ARGV[3], ARGV[i] }))
end
return redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[2])
