-- heartbeat.lua: extends the lease of a running task.
-- KEYS[1] run hash, [2] partition timers zset
-- ARGV[1] execution seq, [2] attempt, [3] lease ms, [4] the "lease" timer member,
--     [5] the lease secret the task id names
-- Returns "ok", "stale" (not this attempt, not running, or not this lease's secret),
-- "terminal" or "missing".
local status = redis.call('HGET', KEYS[1], 'status')
if status == false then return 'missing' end
if TERMINAL[status] then return 'terminal' end
local exec = redis.call('HMGET', KEYS[1], xf(ARGV[1], 's'), xf(ARGV[1], 'n'), xf(ARGV[1], 'held'),
  xf(ARGV[1], 'k'))
if exec[1] ~= 'RUNNING' or exec[2] ~= ARGV[2] or exec[3] or exec[4] ~= ARGV[5] then
  return 'stale'
end
-- No lease timer: it expired while the run was paused and is held; the attempt is over.
if not redis.call('ZSCORE', KEYS[2], ARGV[4]) then return 'stale' end
redis.call('ZADD', KEYS[2], 'XX', now_ms() + tonumber(ARGV[3]), ARGV[4])
return 'ok'
