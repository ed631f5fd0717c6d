-- search_prune.lua: takes the runs of one partition that ended long enough ago out of
-- the search indexes (their keys expire with the run's retention: see finish_run).
-- KEYS[1] the partition's ended runs (zset by end ms), [2] the partition's index of all runs
-- ARGV[1] ms after its end that a run is taken out (now, by Redis's clock), [2] most runs to take, [3] the partition's run key prefix,
--     [4] its runs-by-name key prefix, [5] its index prefix
-- Returns { runs taken, end ms of the next ended run or -1 }.
-- A run whose hash has expired already is taken out of the all-runs, ended and terminal
-- status indexes only (its name and searched values are gone with it): the listing drops
-- what it meets of it (app/store/search.py).
local cutoff = now_ms() - tonumber(ARGV[1])
local ended = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', cutoff, 'LIMIT', 0, tonumber(ARGV[2]))
for _, flow in ipairs(ended) do
  local ctx = { run = ARGV[3] .. flow, flow = flow }
  local name = redis.call('HGET', ctx.run, 'name')
  if name then
    ix_remove(ctx, flow)
    redis.call('ZREM', ARGV[4] .. name, flow)
  else
    for status in pairs(TERMINAL) do redis.call('ZREM', ARGV[5] .. 's:' .. status, flow) end
  end
  redis.call('ZREM', KEYS[2], flow)
  redis.call('ZREM', KEYS[1], flow)
end
local next_run = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if next_run[2] == nil then return { #ended, -1 } end
return { #ended, tonumber(next_run[2]) }
