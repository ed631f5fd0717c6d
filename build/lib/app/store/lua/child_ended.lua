-- child_ended.lua: a child run has ended; its end is delivered to the parent's execution that
-- waits for it (this script runs on the parent's partition), once: the execution keeps the
-- child's status, output and reason, and its step timer, due now, continues it (as a wait's
-- does with an event). A for-each item's is an "istep" timer instead: it ends the item from
-- the item's own fields, not from the whole run, which holds every item.
-- KEYS[1] run hash, [2] history list, [3] partition timers zset, [4] events list,
--     [5] waiters list, [6] held set (all of the parent)
-- ARGV[1] parent flow id, [2] partition, [3] notify channel, [4] retention seconds,
--     [5] the parent's execution seq, [6] child run id, [7] the child's status
--     (COMPLETED, FAILED or TERMINATED), [8] its output JSON (COMPLETED) or "", [9] its reason
-- Returns "delivered"; "held" (delivered to a PAUSED run: its step waits for resume);
-- "stale" (the execution does not wait for this child, or was told already); "terminal"
-- or "missing".
local ctx = run_context()
local seq, child = ARGV[5], ARGV[6]
local exec = redis.call('HMGET', ctx.run, 'status', xf(seq, 's'), xf(seq, 'n'), xf(seq, 'cw'),
  xf(seq, 'cid'), xf(seq, 'p'))
local status = exec[1]
if status == false then return 'missing' end
if TERMINAL[status] then return 'terminal' end
if exec[2] ~= 'WAITING' or exec[3] ~= '1' or exec[4] == false then return 'stale' end
if exec[5] ~= false and exec[5] ~= child then return 'stale' end
redis.call('HSET', ctx.run, xf(seq, 'cid'), child, xf(seq, 'cs'), ARGV[7], xf(seq, 'co'), ARGV[8],
  xf(seq, 'ce'), ARGV[9], xf(seq, 'n'), 2, 'updatedAt', ctx.now)
local kind = 'step'
if exec[6] then kind = 'istep' end
add_timer(ctx, timer_member(ctx, kind, seq, 2), ctx.now)
hist(ctx, { event = 'CHILD_ENDED', action = tonumber(redis.call('HGET', ctx.run, xf(seq, 'a'))),
  seq = tonumber(seq), child = child, status = ARGV[7] })
if status == 'PAUSED' then return done(ctx, 'held') end
return done(ctx, 'delivered')
