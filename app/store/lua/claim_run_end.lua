-- claim_run_end.lua: every server process hears of each run's end; the first to claim it
-- counts it (metrics) and emits its span. A run that has expired is not written to (no hash
-- is made for it).
-- KEYS[1] run hash
-- ARGV[1] the field that marks the end as told
-- Returns { name, createdAt, finishedAt } to the first claim; false to later claims and
-- for a run that is gone.
local run, told = KEYS[1], ARGV[1]
if redis.call('EXISTS', run) == 0 then return false end
if redis.call('HSETNX', run, told, '1') == 0 then return false end
return redis.call('HMGET', run, 'name', 'createdAt', 'finishedAt')
