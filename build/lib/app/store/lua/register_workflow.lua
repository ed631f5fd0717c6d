-- register_workflow.lua: stores a definition as a new version unless an identical one exists.
-- KEYS[1] the workflow's hash (v:<n> -> definition, d:<digest> -> n, latest -> n),
--     [2] set of workflow names, [3] set of the user action names workflows queue tasks for
-- ARGV[1] workflow name, [2] digest of the canonical definition, [3] definition JSON,
--     [4..] the definition's user action names
-- Returns {version, 1 if created else 0}.
for i = 4, #ARGV do redis.call('SADD', KEYS[3], ARGV[i]) end
local existing = redis.call('HGET', KEYS[1], 'd:' .. ARGV[2])
if existing then return { tonumber(existing), 0 } end
local version = redis.call('HINCRBY', KEYS[1], 'latest', 1)
redis.call('HSET', KEYS[1], 'v:' .. version, ARGV[3], 'd:' .. ARGV[2], version)
redis.call('SADD', KEYS[2], ARGV[1])
return { version, 1 }
