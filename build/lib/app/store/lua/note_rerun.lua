-- note_rerun.lua: the history of a run says that a new run reruns it (the new run's own
-- history says so from its start: the "rerun" op of apply_ops).
-- KEYS[1] run hash, [2] history list
-- ARGV[1] the new run's id, [2] who asked (the principal's name)
-- Returns "ok", or "missing" when the run has expired meanwhile (nothing is written).
local ctx = { run = KEYS[1], hist = KEYS[2], now = now_ms() }
if redis.call('EXISTS', ctx.run) == 0 then return 'missing' end
hist(ctx, { event = 'RERUN', flow = ARGV[1], by = ARGV[2] })
return done(ctx, 'ok')
